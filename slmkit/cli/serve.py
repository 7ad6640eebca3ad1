"""`slm serve`: the OpenAI, Ollama and Azure AI Inference server."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from slmkit.cli import options as opt
from slmkit.cli.app import app, err_console
from slmkit.errors import InvalidParameterError
from slmkit.providers.registry import parse_model_string
from slmkit.store.store import ModelStore

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_SCALE = "Scale-out"


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
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="Let web pages from this "
                           "origin call the API (repeatable; * for any). Off by default.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    ray: Annotated[bool, typer.Option("--ray", help="Serve through Ray Serve replicas (slmkit[ray]); "
                   "--threads is then per replica.", rich_help_panel=_SCALE)] = False,
    replicas: Annotated[int, typer.Option(min=1, max=1024, help="Fixed number of replicas (with --ray).",
                        rich_help_panel=_SCALE)] = 1,
    autoscale: Annotated[Optional[str], typer.Option(help="MIN:MAX replicas, scaled on ongoing requests "
                         "(with --ray).", rich_help_panel=_SCALE)] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Join this Ray cluster (ray://… or host:port) "
                           "instead of starting a local Ray.", rich_help_panel=_SCALE)] = None,
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
        cors_origins=list(cors_origin or []),
    )
    if log_level.lower() not in LOG_LEVELS:
        raise InvalidParameterError("--log-level", f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    if backend == "vllm":  # models load inside the server; refuse before it starts
        from slmkit.backends.vllm import require_vllm

        require_vllm()
    store = ModelStore()
    for name in config.models:  # unknown names fail here, in one line, before the server starts
        if parse_model_string(name) is None:
            store.resolve(name)
    if host not in ("127.0.0.1", "localhost", "::1") and not config.api_keys:
        err_console.print(f"[yellow]warning:[/] serving on {host} without an API key (use --api-key)")
    if not ray:
        if autoscale or ray_address or replicas != 1:
            raise InvalidParameterError("--ray", "--replicas, --autoscale and --ray-address need --ray")
        run_server(config, log_level=log_level.lower())
        return
    from slmkit.scale.ray_serve import RayServeOptions, serve_with_ray

    if autoscale and replicas != 1:
        raise InvalidParameterError("--autoscale", "give --replicas N or --autoscale MIN:MAX, not both")
    options = RayServeOptions(replicas=replicas, address=ray_address,
                              autoscale=RayServeOptions.parse_autoscale(autoscale) if autoscale else None)
    serve_with_ray(config, options, log_level=log_level.lower())
