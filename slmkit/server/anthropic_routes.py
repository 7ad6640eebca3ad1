"""Anthropic's Messages API: ``POST /v1/messages`` (whole or streamed) and
``POST /v1/messages/count_tokens``, as llama-server, vLLM and Ollama offer it.

A streamed answer is Anthropic's event sequence: ``message_start``, ``content_block_start``,
``ping``, ``content_block_delta`` ..., ``content_block_stop``, ``message_delta`` (stop reason and
output tokens), ``message_stop``; an error after the 200 is an ``error`` event. A reply that calls
tools has a ``tool_use`` block per call (its input streamed as ``input_json_delta`` fragments)
after any text block, and stops with ``tool_use``. Errors before the 200 have Anthropic's shape (server/http.py): ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from slmkit.server.replies import BlockEvent, ReplyBlocks, split_whole
from slmkit.types import RequestOutput, ToolCall, Usage

router = APIRouter()

TOOL_USE_ID_PREFIX = "toolu"  # Anthropic's call ids: toolu_...


@router.post("/v1/messages", openapi_extra=request_body(MessagesRequest))
async def create_message(request: Request):
    ctx = ctx_of(request)
    req = parse_model(MessagesRequest, await read_json(request))
    req.check_supported()
    messages = req.to_messages()
    served = await ctx.manager.get(req.model, remote_ok=True)
    params = req.params(served.default_params)
    deltas = await ctx.chat(served, messages, params, asked_max_tokens=req.max_tokens,
                            max_tokens_param="max_tokens")
    reply = _Reply(new_id("msg"), req.model, req.calls_tools)
    if req.stream:
        return StreamingResponse(reply.events(deltas), media_type="text/event-stream", headers=SSE_HEADERS)
    return await unless_client_leaves(request, reply.whole(deltas))


@router.post("/v1/messages/count_tokens", openapi_extra=request_body(MessagesRequest))
async def count_tokens(request: Request):
    """What the prompt costs in tokens (the tools' description included), as Claude tools ask
    before sending it."""
    ctx = ctx_of(request)
    data = await read_json(request)
    if isinstance(data, dict):
        data = {"max_tokens": 1, **data}  # count_tokens takes no max_tokens
    req = parse_model(MessagesRequest, data)
    messages = req.to_messages()
    tools = req.tool_list() if req.calls_tools else []
    served = await ctx.manager.get(req.model, remote_ok=True)
    if isinstance(served, RemoteModel):
        raise InvalidRequestError(f"{req.model} is a provider model: its tokenizer is not here to count with",
                                  param="model")
    return {"input_tokens": len(served.formatter.encode_chat(messages, tools=tools))}


def _usage(usage: Usage) -> dict:
    return {"input_tokens": usage.prompt_tokens - usage.cached_tokens, "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": usage.cached_tokens}


def _tool_use(call: ToolCall, with_input: bool = True) -> dict:
    """A ``tool_use`` block; streamed, it starts with an empty input that the deltas fill."""
    return {"type": "tool_use", "id": call.id, "name": call.name,
            "input": call.arguments_dict() if with_input else {}}


@dataclass
class _Reply:
    """One assistant message, whole or as Anthropic's event stream."""

    id: str
    model: str
    calls_tools: bool

    def message(self, content: list[dict], done: Completion | None, called: bool = False) -> dict:
        return {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
            "stop_reason": None if done is None else _stop_reason(done, called),
            "stop_sequence": None if done is None or called else done.stop_sequence,
            "usage": _usage(done.usage if done is not None else Usage()),
        }

    async def whole(self, deltas: AsyncIterator[RequestOutput]) -> dict:
        done = await collect(deltas)
        text, calls = split_whole(done, self.calls_tools, TOOL_USE_ID_PREFIX)
        content = ([{"type": "text", "text": text}] if text or not calls else []) + [_tool_use(c) for c in calls]
        return self.message(content, done, called=bool(calls))

    async def events(self, deltas: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
        def event(kind: str, **data) -> str:
            return sse({"type": kind, **data}, event=kind)

        blocks = ReplyBlocks(self.calls_tools, TOOL_USE_ID_PREFIX)
        yield event("message_start", message=self.message([], None))
        for step in blocks.start():
            yield _event_of(step, event)
        yield event("ping")
        done = Completion()
        try:
            async for out in deltas:
                for step in blocks.feed(out):
                    yield _event_of(step, event)
                if out.finished:
                    done.finish_reason, done.stop_sequence, done.usage = out.finish_reason, out.stop_sequence, out.usage
        except Exception as exc:  # noqa: BLE001 - the 200 is sent: the failure is an event, as Anthropic streams it
            err = exc if isinstance(exc, SlmkitError) else SlmkitError(f"internal error: {type(exc).__name__}: {exc}")
            yield sse(anthropic_error_body(err), event="error")
            return
        finally:
            await deltas.aclose()
        for step in blocks.finish():
            yield _event_of(step, event)
        called = blocks.called
        yield event("message_delta", delta={"stop_reason": _stop_reason(done, called),
                                            "stop_sequence": None if called else done.stop_sequence},
                    usage=_usage(done.usage))  # the input count too: message_start was sent before it was known
        yield event("message_stop")


def _event_of(step: BlockEvent, event) -> str:
    """A block's opening, growth or end as Anthropic's ``content_block_*`` event."""
    block = step.block
    if step.kind == "open":
        content = {"type": "text", "text": ""} if block.kind == "text" else _tool_use(block.call, with_input=False)
        return event("content_block_start", index=block.index, content_block=content)
    if step.kind == "delta":
        delta = ({"type": "text_delta", "text": step.delta} if block.kind == "text"
                 else {"type": "input_json_delta", "partial_json": step.delta})
        return event("content_block_delta", index=block.index, delta=delta)
    return event("content_block_stop", index=block.index)


def _stop_reason(done: Completion, called: bool) -> str:
    if done.finish_reason == "length":
        return "max_tokens"
    if called:
        return "tool_use"
    return "stop_sequence" if done.stop_sequence else "end_turn"
