"""`slm serve`: the OpenAI, Ollama and Azure AI Inference server."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from slmkit.cli import options as opt
from slmkit.cli.app import app, err_console


@app.command()
def serve(
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Load at start (repeatable); "
                     "others load on first use. A .gguf path is served under its file name.")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", help="Required key (repeatable); "
                       "also SLMKIT_API_KEYS=k1,k2.")] = None,
    parallel: Annotated[int, typer.Option(min=1, max=256, help="Sequences decoded together per model.")] = 8,
    context_length: opt.ContextLength = None,
    threads: opt.Threads = None,
    backend: opt.Backend = "auto", dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    max_queue: Annotated[int, typer.Option(min=0, help="Waiting requests per model before 429.")] = 64,
    request_timeout: Annotated[float, typer.Option(min=1, help="Seconds before a request is stopped.")] = 600,
    keep_alive: Annotated[float, typer.Option(help="Seconds an idle model stays loaded (<0: forever).")] = 300,
    no_prefix_cache: Annotated[bool, typer.Option("--no-prefix-cache", help="Recompute every prompt.")] = False,
    batch_invariant: Annotated[bool, typer.Option("--batch-invariant", help="Prefill in chunks of < 64 "
                               "tokens so every answer is bit-identical whatever the batch or cache.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
):
    """Serve models over the OpenAI, Ollama and Azure AI Inference APIs."""
    from slmkit.backends.loading import BackendOptions
    from slmkit.server.config import BATCH_INVARIANT_CHUNK, ServerConfig
    from slmkit.server.run import serve as run_server

    config = ServerConfig(
        host=host, port=port, models=list(model or []),
        api_keys=set(api_key or []) | ServerConfig.keys_from_env(), parallel=parallel,
        context_length=context_length, threads=threads, max_queue=max_queue,
        backend=BackendOptions(backend, dtype, device),
        request_timeout=request_timeout, keep_alive=keep_alive, prefix_caching=not no_prefix_cache,
        max_chunk_per_sequence=BATCH_INVARIANT_CHUNK if batch_invariant else None,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not config.api_keys:
        err_console.print(f"[yellow]warning:[/] serving on {host} without an API key (use --api-key)")
    run_server(config, log_level=log_level)
