"""Anthropic's Messages API: ``POST /v1/messages`` (whole or streamed) and
``POST /v1/messages/count_tokens``, as llama-server, vLLM and Ollama offer it.

A streamed answer is Anthropic's event sequence: ``message_start``, ``content_block_start``,
``ping``, ``content_block_delta`` ..., ``content_block_stop``, ``message_delta`` (stop reason and
output tokens), ``message_stop``; an error after the 200 is an ``error`` event. Errors before it
have Anthropic's shape (server/http.py): ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from slmkit.errors import InvalidRequestError, SlmkitError
from slmkit.server.context import ctx_of
from slmkit.server.generation import Completion, collect, new_id
from slmkit.server.http import SSE_HEADERS, anthropic_error_body, parse_model, read_json, sse, unless_client_leaves
from slmkit.server.anthropic_protocol import MessagesRequest
from slmkit.server.openapi import request_body
from slmkit.server.remote import RemoteModel
from slmkit.types import RequestOutput, Usage

router = APIRouter()


@router.post("/v1/messages", openapi_extra=request_body(MessagesRequest))
async def create_message(request: Request):
    ctx = ctx_of(request)
    req = parse_model(MessagesRequest, await read_json(request))
    req.check_supported()
    served = await ctx.manager.get(req.model, remote_ok=True)
    params = req.params(served.default_params)
    deltas = await ctx.chat(served, req.to_messages(), params, asked_max_tokens=req.max_tokens,
                            max_tokens_param="max_tokens")
    message_id = new_id("msg")
    if req.stream:
        return StreamingResponse(_events(deltas, message_id, req.model), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    return await unless_client_leaves(request, _whole(deltas, message_id, req.model))


@router.post("/v1/messages/count_tokens", openapi_extra=request_body(MessagesRequest))
async def count_tokens(request: Request):
    """What the prompt costs in tokens, as Claude tools ask before sending it."""
    ctx = ctx_of(request)
    data = await read_json(request)
    if isinstance(data, dict):
        data = {"max_tokens": 1, **data}  # count_tokens takes no max_tokens
    req = parse_model(MessagesRequest, data)
    served = await ctx.manager.get(req.model, remote_ok=True)
    if isinstance(served, RemoteModel):
        raise InvalidRequestError(f"{req.model} is a provider model: its tokenizer is not here to count with",
                                  param="model")
    return {"input_tokens": len(served.formatter.encode_chat(req.to_messages()))}


def _message(message_id: str, model: str, text: str | None, done: Completion | None) -> dict:
    usage = done.usage if done is not None else Usage()
    return {
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": [] if text is None else [{"type": "text", "text": text}],
        "stop_reason": _stop_reason(done) if done is not None else None,
        "stop_sequence": done.stop_sequence if done is not None else None,
        "usage": _usage(usage),
    }


def _stop_reason(done: Completion) -> str:
    if done.finish_reason == "length":
        return "max_tokens"
    return "stop_sequence" if done.stop_sequence else "end_turn"


def _usage(usage: Usage) -> dict:
    return {"input_tokens": usage.prompt_tokens - usage.cached_tokens, "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": usage.cached_tokens}


async def _whole(deltas: AsyncIterator[RequestOutput], message_id: str, model: str) -> dict:
    done = await collect(deltas)
    return _message(message_id, model, done.text, done)


async def _events(deltas: AsyncIterator[RequestOutput], message_id: str, model: str) -> AsyncIterator[str]:
    def event(kind: str, **data) -> str:
        return sse({"type": kind, **data}, event=kind)

    yield event("message_start", message=_message(message_id, model, None, None))
    yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
    yield event("ping")
    done = Completion()
    try:
        async for out in deltas:
            if out.text:
                yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": out.text})
            if out.finished:
                done.finish_reason, done.stop_sequence, done.usage = out.finish_reason, out.stop_sequence, out.usage
    except Exception as exc:  # noqa: BLE001 - the 200 is sent: the failure is an event, as Anthropic streams it
        err = exc if isinstance(exc, SlmkitError) else SlmkitError(f"internal error: {type(exc).__name__}: {exc}")
        yield sse(anthropic_error_body(err), event="error")
        return
    finally:
        await deltas.aclose()
    yield event("content_block_stop", index=0)
    yield event("message_delta", delta={"stop_reason": _stop_reason(done), "stop_sequence": done.stop_sequence},
                usage={"output_tokens": done.usage.completion_tokens})
    yield event("message_stop")
