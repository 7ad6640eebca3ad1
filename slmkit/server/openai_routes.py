"""The OpenAI API: /v1/chat/completions, /v1/completions, /v1/models, /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import AsyncIterator

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from slmkit.errors import InvalidParameterError, ModelNotFoundError, SlmkitError
from slmkit.server.context import ServerContext, ctx_of
from slmkit.server.generation import Completion, collect, new_id, seeds_for
from slmkit.server.openapi import request_body
from slmkit.server.http import SSE_HEADERS, parse_model, read_json, sse, unless_client_leaves
from slmkit.server.models import ServedModel
from slmkit.server.remote import RemoteModel
from slmkit.server.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from slmkit.server.replies import ReplySplitter, split_whole
from slmkit.text.tool_calls import ToolCallDelta, merge_deltas
from slmkit.types import RequestOutput, TokenLogprob

router = APIRouter()
log = logging.getLogger("slmkit.server")


# -- models -------------------------------------------------------------------------------
@router.get("/v1/models")
async def list_models(request: Request):
    return {"object": "list", "data": ctx_of(request).model_cards()}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request):
    for card in ctx_of(request).model_cards():
        if card["id"] == model_id:
            return card
    raise ModelNotFoundError(f"unknown model {model_id!r}; GET /v1/models lists the models served here")


# -- chat ---------------------------------------------------------------------------------
@router.post("/v1/chat/completions", openapi_extra=request_body(ChatCompletionRequest))
async def chat_completions(request: Request):
    ctx = ctx_of(request)
    req = parse_model(ChatCompletionRequest, await read_json(request))
    return await run_chat(ctx, req, request)


async def run_chat(ctx: ServerContext, req: ChatCompletionRequest, request: Request):
    """Shared with the Azure AI Inference route (same body, same answer)."""
    req.check_supported()
    served = await ctx.manager.get(req.model, remote_ok=True)
    params = req.params(served.default_params)
    log.debug("chat for %s: %s", served.name, params)  # what the sampler gets, after the model's defaults
    if isinstance(served, RemoteModel):
        served.check_supported(logprobs=req.logprobs, n=req.n)
        streams = [await served.chat(req.to_messages(), params)]
    else:
        tools = params.tools if params.structure.calls_tools else []
        prompt = await served.encode_chat(req.to_messages(), req.num_crops, tools)
        prompt_ids = prompt.token_ids
        limit, limit_name = req.token_limit
        served.check_fits(len(prompt_ids), limit, max_tokens_param=limit_name)
        served.admit(prompt_ids, params, ctx.config.max_queue)
        streams = [ctx.stream(served, prompt_ids, p, prompt.embeddings) for p in seeds_for(params, req.n)]
    rid, created = new_id("chatcmpl"), int(time.time())
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        body = _guarded(_chat_sse(served, streams, rid, created, req.model, include_usage, req.logprobs, req.n,
                                  params.structure.calls_tools))
        return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)
    return await unless_client_leaves(request, _chat_response(ctx, served, req, streams, rid, created))


async def _chat_response(ctx: ServerContext, served, req: ChatCompletionRequest, streams, rid: str, created: int):
    done = await asyncio.gather(*(collect(s) for s in streams))
    calls_tools = bool(req.tools) and req.tool_choice != "none"
    choices = []
    for i, c in enumerate(done):
        finish = _finish(c.finish_reason)
        content, calls = split_whole(c, calls_tools)
        message: dict = {"role": "assistant", "content": content, "refusal": None}
        if calls:
            message["content"] = message["content"] or None
            message["tool_calls"] = [call.to_dict() for call in calls]
            finish = "tool_calls" if finish in ("stop", "tool_calls") else finish
        choices.append({"index": i, "message": message,
                        "logprobs": {"content": _chat_logprobs(served, c.logprobs)} if req.logprobs else None,
                        "finish_reason": finish})
    return {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
            "system_fingerprint": ctx.fingerprint, "choices": choices, "usage": _usage(done, req.n)}


def _chunk_writer(rid: str, created: int, model: str, kind: str, include_usage: bool):
    """One SSE event of a stream; with ``include_usage`` every chunk carries ``usage`` (null but
    in the last one)."""
    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        data = {"id": rid, "object": kind, "created": created, "model": model,
                "system_fingerprint": None, "choices": choices}
        if include_usage:
            data["usage"] = usage
        return sse(data)

    return chunk


def _final_usage(finals: dict[int, RequestOutput], n: int) -> dict:
    return _usage([Completion(usage=finals[i].usage) for i in sorted(finals)], n)


async def _chat_sse(served: ServedModel, streams, rid: str, created: int, model: str,
                    include_usage: bool, logprobs: bool, n: int, calls_tools: bool = False) -> AsyncIterator[str]:
    chunk = _chunk_writer(rid, created, model, "chat.completion.chunk", include_usage)

    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                  "finish_reason": None} for i in range(len(streams))])
    finals: dict[int, RequestOutput] = {}
    splitters = [ReplySplitter(calls_tools) for _ in streams]
    async for index, out in _merge(streams):
        text, deltas = splitters[index].feed(out)
        finish = _finish(out.finish_reason)
        if finish == "stop" and splitters[index].called:
            finish = "tool_calls"
        if text or deltas or out.finished or (logprobs and out.logprobs):
            lp = {"content": _chat_logprobs(served, out.logprobs or [])} if logprobs else None
            delta: dict = {"content": text} if text else {}
            if deltas:
                delta["tool_calls"] = [_tool_call_delta(d) for d in merge_deltas(deltas)]
            yield chunk([{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}])
        if out.finished:
            finals[index] = out
    if include_usage:
        yield chunk([], _final_usage(finals, n))
    yield "data: [DONE]\n\n"


def _tool_call_delta(delta: ToolCallDelta) -> dict:
    if delta.name is None:
        return {"index": delta.index, "function": {"arguments": delta.arguments}}
    return {"index": delta.index, "id": delta.id, "type": "function",
            "function": {"name": delta.name, "arguments": delta.arguments}}


# -- completions --------------------------------------------------------------------------
@router.post("/v1/completions", openapi_extra=request_body(CompletionRequest))
async def completions(request: Request):
    ctx = ctx_of(request)
    req = parse_model(CompletionRequest, await read_json(request))
    req.check_supported()
    served = await ctx.manager.get(req.model, remote_ok=True)
    params = req.params(served.default_params)
    if isinstance(served, RemoteModel):
        return await _remote_completion(ctx, served, req, params)
    prompts = []
    for i, prompt in enumerate(req.prompts()):
        ids = served.formatter.encode_prompt(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise InvalidParameterError("prompt" if len(req.prompts()) == 1 else f"prompt[{i}]", "is empty")
        served.check_fits(len(ids), req.max_tokens, max_tokens_param="max_tokens")
        served.admit(ids, params, ctx.config.max_queue)
        prompts.append(ids)
    rid, created = new_id("cmpl"), int(time.time())
    streams = [ctx.stream(served, ids, p) for ids in prompts for p in seeds_for(params, req.n)]
    echoes = [served.model.tokenizer.decode(ids) if req.echo else "" for ids in prompts for _ in range(req.n)]
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        body = _guarded(_completion_sse(served, streams, echoes, rid, created, req.model, include_usage,
                                        req.logprobs, req.n))
        return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)
    return await unless_client_leaves(request, _completion_response(ctx, served, req, streams, echoes, rid, created))


async def _completion_response(ctx: ServerContext, served, req: CompletionRequest, streams, echoes, rid: str,
                               created: int):
    done = await asyncio.gather(*(collect(s) for s in streams))
    choices = [{
        "index": i, "text": echoes[i] + c.text,
        "logprobs": _completion_logprobs(served, c.logprobs, len(echoes[i])) if req.logprobs is not None else None,
        "finish_reason": _finish(c.finish_reason),
    } for i, c in enumerate(done)]
    return {"id": rid, "object": "text_completion", "created": created, "model": req.model,
            "system_fingerprint": ctx.fingerprint, "choices": choices, "usage": _usage(done, req.n)}


async def _completion_sse(served, streams, echoes, rid, created, model, include_usage, logprobs, n):
    chunk = _chunk_writer(rid, created, model, "text_completion", include_usage)

    for i, echo in enumerate(echoes):
        if echo:
            yield chunk([{"index": i, "text": echo, "logprobs": None, "finish_reason": None}])
    finals: dict[int, RequestOutput] = {}
    async for index, out in _merge(streams):
        if out.text or out.finished:
            lp = _completion_logprobs(served, out.logprobs or [], 0) if logprobs is not None else None
            yield chunk([{"index": index, "text": out.text, "logprobs": lp,
                          "finish_reason": _finish(out.finish_reason)}])
        if out.finished:
            finals[index] = out
    if include_usage:
        yield chunk([], _final_usage(finals, n))
    yield "data: [DONE]\n\n"


async def _remote_completion(ctx, served: RemoteModel, req: CompletionRequest, params):
    prompts = req.prompts()
    if len(prompts) != 1 or not isinstance(prompts[0], str) or req.echo:
        raise InvalidParameterError("prompt", f"{served.name} takes one text prompt (no token ids, no echo)")
    served.check_supported(logprobs=req.logprobs is not None, n=req.n)
    streams = [await served.complete(prompts[0], params)]
    rid, created = new_id("cmpl"), int(time.time())
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        body = _guarded(_completion_sse(served, streams, [""], rid, created, req.model, include_usage, None, 1))
        return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)
    done = [await collect(streams[0])]
    choices = [{"index": 0, "text": done[0].text, "logprobs": None, "finish_reason": _finish(done[0].finish_reason)}]
    return {"id": rid, "object": "text_completion", "created": created, "model": req.model,
            "system_fingerprint": ctx.fingerprint, "choices": choices, "usage": _usage(done)}


# -- embeddings ---------------------------------------------------------------------------
@router.post("/v1/embeddings", openapi_extra=request_body(EmbeddingRequest))
async def embeddings(request: Request):
    ctx = ctx_of(request)
    req = parse_model(EmbeddingRequest, await read_json(request))
    embedder = ctx.embedder_for(req.model)
    result = await asyncio.to_thread(embedder.embed, req.texts(), truncate=False, dimensions=req.dimensions)
    data = []
    for i, vector in enumerate(result.vectors):
        value = (base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
                 if req.encoding_format == "base64" else vector.tolist())
        data.append({"object": "embedding", "index": i, "embedding": value})
    return JSONResponse({"object": "list", "data": data, "model": req.model,
                         "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}})


# -- helpers ------------------------------------------------------------------------------
async def _guarded(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Once streaming has begun the status is sent: an error becomes an SSE ``error`` event."""
    try:
        async for event in events:
            yield event
    except SlmkitError as exc:
        yield sse({"error": {"message": exc.message, "type": exc.error_type, "param": exc.param,
                             "code": exc.code}})
    finally:
        await events.aclose()


async def _merge(streams: list[AsyncIterator[RequestOutput]]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several choices' deltas as they come; closing this closes (aborts) them all."""
    if len(streams) == 1:
        try:
            async for out in streams[0]:
                yield 0, out
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream):
        try:
            async for out in stream:
                await queue.put((index, out, None))
        except Exception as exc:  # noqa: BLE001 - re-raised in the consumer
            await queue.put((index, None, exc))
        finally:
            await queue.put((index, None, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        open_streams = len(streams)
        while open_streams:
            index, out, exc = await queue.get()
            if exc is not None:
                raise exc
            if out is None:
                open_streams -= 1
                continue
            yield index, out
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _finish(reason: str | None) -> str | None:
    return None if reason is None else ("stop" if reason == "abort" else reason)


def _usage(done: list[Completion], n: int = 1) -> dict:
    """The prompt counts once per prompt (not per choice); cached tokens as OpenAI reports them."""
    prompt = sum(c.usage.prompt_tokens for c in done[::n])
    completion = sum(c.usage.completion_tokens for c in done)
    cached = sum(c.usage.cached_tokens for c in done[::n])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _token_text(served: ServedModel, token_id: int) -> tuple[str, list[int]]:
    raw = served.model.tokenizer.token_bytes(token_id)
    return raw.decode("utf-8", errors="replace"), list(raw)


def _chat_logprobs(served: ServedModel, logprobs: list[TokenLogprob]) -> list[dict]:
    entries = []
    for lp in logprobs:
        text, raw = _token_text(served, lp.token_id)
        top = []
        for token_id, value in lp.top:
            t, b = _token_text(served, token_id)
            top.append({"token": t, "logprob": value, "bytes": b})
        entries.append({"token": text, "logprob": lp.logprob, "bytes": raw, "top_logprobs": top})
    return entries


def _completion_logprobs(served: ServedModel, logprobs: list[TokenLogprob], offset: int) -> dict:
    tokens, values, tops, offsets = [], [], [], []
    for lp in logprobs:
        text, _ = _token_text(served, lp.token_id)
        tokens.append(text)
        values.append(lp.logprob)
        tops.append({_token_text(served, t)[0]: v for t, v in lp.top})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

