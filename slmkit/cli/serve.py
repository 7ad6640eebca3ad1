"""`slm serve`: the OpenAI, Ollama and Azure AI Inference server."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from slmkit import limits
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
    quantize: opt.Quantize = "none", trust_remote_code: opt.TrustRemoteCode = False,
    max_queue: Annotated[int, typer.Option(min=0, help="Waiting requests per model before 429.")] = 64,
    request_timeout: Annotated[float, typer.Option(min=1, help="Seconds before a request is stopped.")] = 600,
    keep_alive: Annotated[float, typer.Option(help="Seconds an idle model stays loaded (<0: forever).")] = 300,
    no_prefix_cache: Annotated[bool, typer.Option("--no-prefix-cache", help="Recompute every prompt.")] = False,
    batch_invariant: Annotated[bool, typer.Option("--batch-invariant", help="Prefill in chunks of < 64 "
                               "tokens so every answer is bit-identical whatever the batch or cache.")] = False,
    speculative: Annotated[Optional[str], typer.Option("--speculative", help="off; ngram: draft tokens from "
                           "each request's own text; draft: from --draft-model (the default with it). Drafts are "
                           "verified in the batched forward (exact).")] = None,
    draft_model: Annotated[Optional[str], typer.Option("--draft-model", help="A much smaller model with the same "
                           "tokenizer (store name or .gguf path) that proposes tokens for the --model models.")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="Let web pages from this "
                           "origin call the API (repeatable; * for any). Off by default.")] = None,
    no_playground: Annotated[bool, typer.Option("--no-playground", help="No web playground at / "
                             "(it then answers \"slmkit is running\", like Ollama).")] = False,
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
    from slmkit.backends.loading import BackendOptions, check_device
    from slmkit.server.config import BATCH_INVARIANT_CHUNK, ServerConfig
    from slmkit.server.run import serve as run_server

    config = ServerConfig(
        host=host, port=port, models=list(model or []),
        api_keys=set(api_key or []) | ServerConfig.keys_from_env(), parallel=parallel,
        context_length=context_length, threads=threads, max_queue=max_queue,
        backend=BackendOptions(backend, dtype, device, quantize=quantize, trust_remote_code=trust_remote_code),
        request_timeout=request_timeout, keep_alive=keep_alive, prefix_caching=not no_prefix_cache,
        max_chunk_per_sequence=BATCH_INVARIANT_CHUNK if batch_invariant else None,
        cors_origins=list(cors_origin or []), speculative=speculative or ("draft" if draft_model else "off"),
        draft_model=draft_model, playground=not no_playground,
    )
    if config.speculative not in limits.SPECULATIVE_MODES:
        raise InvalidParameterError("--speculative", f"{speculative!r} is not one of "
                                    f"{', '.join(limits.SPECULATIVE_MODES)}")
    _check_draft_model(config)
    if log_level.lower() not in LOG_LEVELS:
        raise InvalidParameterError("--log-level", f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    check_device(device)  # models load inside the server; refuse before it starts
    if backend == "vllm":
        from slmkit.backends.vllm import require_vllm

        require_vllm()
    store = ModelStore()
    for name in config.models:  # unknown names fail here, in one line, before the server starts
        if parse_model_string(name) is None:
            store.resolve(name)
    if draft_model:
        _check_tokenizers(config, store)
    if host not in ("127.0.0.1", "localhost", "::1") and not config.api_keys:
        err_console.print(f"warning: serving on {host} without an API key (use --api-key)", style="yellow")
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


def _check_draft_model(config) -> None:
    """--draft-model drafts for the local --model models; refuse what cannot work before serving
    (the tokenizers are compared when the models load)."""
    from slmkit.engine.engine import DRAFT_NEEDS_MODEL

    if config.speculative == "draft" and not config.draft_model:
        raise InvalidParameterError("--speculative", DRAFT_NEEDS_MODEL)
    if not config.draft_model:
        return
    if parse_model_string(config.draft_model) is not None:
        raise InvalidParameterError("--draft-model", f"{config.draft_model} is a provider model; a draft model "
                                    "runs locally, next to the model it drafts for")
    if config.backend.backend == "vllm":
        raise InvalidParameterError("--draft-model", "--backend vllm runs vLLM's own engine; draft-model "
                                    "speculation runs in slmkit's engines (llama.cpp, torch)")
    if not any(parse_model_string(m) is None for m in config.models):
        raise InvalidParameterError("--draft-model", "it drafts for the models loaded at start: give the model "
                                    "it drafts for with --model")


def _check_tokenizers(config, store: ModelStore) -> None:
    """A drafter whose tokenizer is not its targets' is refused now, not at the first request
    (GGUF files: their vocabularies load in a moment; folders are checked when they load)."""
    from slmkit.backends.draft import check_same_tokenizer
    from slmkit.backends.llamacpp import LlamaCppModel

    draft = store.resolve(config.draft_model)
    if not draft.path.is_file():
        return
    drafter = LlamaCppModel(draft.path, vocab_only=True)
    try:
        for name in config.models:
            target = store.resolve(name) if parse_model_string(name) is None else None
            if target is None or not target.path.is_file():
                continue
            vocab = LlamaCppModel(target.path, vocab_only=True)
            try:
                check_same_tokenizer(vocab.tokenizer, drafter.tokenizer, target_name=target.name,
                                     draft_name=draft.name)
            except InvalidParameterError as exc:
                raise InvalidParameterError("--draft-model", exc.detail) from None
            finally:
                vocab.close()
    finally:
        drafter.close()


# -- a running server ---------------------------------------------------------------------
ServerUrl = Annotated[str, typer.Option("--host", envvar="SLMKIT_HOST", help="The running `slm serve` "
                      "(also SLMKIT_HOST).")]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar="SLMKIT_API_KEY", help="Its API key, if "
                   "it needs one (also SLMKIT_API_KEY).")]
DEFAULT_URL = "http://127.0.0.1:8000"


def _call(method: str, url: str, path: str, api_key: str | None, body: dict | None = None) -> dict:
    """One request to a running server; no server there is a one-line error, not a traceback."""
    import httpx

    from slmkit.errors import OverloadedError, SlmkitError

    base = url if "://" in url else f"http://{url}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.request(method, base.rstrip("/") + path, json=body, headers=headers, timeout=120)
    except httpx.HTTPError as exc:
        raise OverloadedError(f"no slmkit server answers at {base} ({exc}); start one with `slm serve` "
                              "or point --host / SLMKIT_HOST at it") from None
    try:
        data = response.json()
    except ValueError:
        data = {}
    if response.status_code >= 400:
        err = SlmkitError(f"{base}: {data.get('error') or response.text.strip() or response.status_code}")
        err.status_code = response.status_code
        raise err
    return data


@app.command()
def ps(url: ServerUrl = DEFAULT_URL, api_key: ApiKey = None):
    """Models a running server has loaded: name, size, processor, and until when."""
    from rich.table import Table

    from slmkit.cli.app import console
    from slmkit.store.gguf_info import format_size

    models = _call("GET", url, "/api/ps", api_key)["models"]
    table = Table("NAME", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL", box=None)
    for m in models:
        seconds = _expires_in(m["expires_at"])
        when = "forever" if seconds > 10 * 365 * 86400 else _from_now(seconds)
        table.add_row(m["name"], format_size(m["size"]), "100% CPU" if not m.get("size_vram") else "GPU",
                      str(m.get("context_length", "")), when)
    console.print(table if models else "No models are loaded.")


def _expires_in(stamp: str) -> float:
    """Seconds until an RFC 3339 time (Ollama's, with nanoseconds, which Python does not read)."""
    import re
    import time
    from datetime import datetime

    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp() - time.time()


def _from_now(seconds: float) -> str:
    if seconds < 1:
        return "now (unloading)"
    if seconds < 90:
        return f"{seconds:.0f} seconds from now"
    return f"{seconds / 60:.0f} minutes from now"


@app.command()
def stop(model: Annotated[str, typer.Argument(help="A loaded model (see `slm ps`).")],
         url: ServerUrl = DEFAULT_URL, api_key: ApiKey = None):
    """Unload a model from a running server now (its requests in flight finish first)."""
    from slmkit.cli.app import console
    from slmkit.errors import ModelNotFoundError

    before = {m["name"] for m in _call("GET", url, "/api/ps", api_key)["models"]}
    # Ollama's `stop`: an empty generate with keep_alive 0; the server resolves the name.
    _call("POST", url, "/api/generate", api_key, {"model": model, "keep_alive": 0})
    after = _call("GET", url, "/api/ps", api_key)["models"]
    gone = before - {m["name"] for m in after}
    if gone:
        console.print(f"stopped {', '.join(sorted(gone))}")
    elif any(_expires_in(m["expires_at"]) < 1 for m in after):
        console.print(f"{model} unloads as soon as its requests in flight finish")
    else:
        raise ModelNotFoundError(f"{model} is not loaded on {url} (loaded: {', '.join(sorted(before)) or 'none'})")
