"""OpenAI's Responses API: ``POST /v1/responses`` (whole or streamed), ``GET`` and ``DELETE
/v1/responses/{id}``.

A streamed answer is the event sequence openai-python reads (``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` ..., the matching ``.done`` events, ``response.completed``), each
an SSE event named by its type and numbered by ``sequence_number``. ``previous_response_id``
continues a stored conversation; answers are stored (in memory, bounded) unless ``store`` is false.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from slmkit.errors import InvalidParameterError, ModelNotFoundError, SlmkitError
from slmkit.server.context import ServerContext, ctx_of
from slmkit.server.generation import Completion, collect, new_id
from slmkit.server.http import SSE_HEADERS, parse_model, read_json, sse, unless_client_leaves
from slmkit.server.openapi import request_body
from slmkit.server.responses_protocol import ResponseRequest
from slmkit.types import Message, RequestOutput, Usage

router = APIRouter()


@router.post("/v1/responses", openapi_extra=request_body(ResponseRequest))
async def create_response(request: Request):
    ctx = ctx_of(request)
    req = parse_model(ResponseRequest, await read_json(request))
    req.check_supported()
    history: list[Message] = []
    if req.previous_response_id is not None:
        stored = ctx.conversations.get(req.previous_response_id)
        if stored is None:
            raise InvalidParameterError("previous_response_id", f"no stored response {req.previous_response_id!r} "
                                        f"(this server keeps the last {ctx.conversations.capacity} in memory, "
                                        "and forgets them when it restarts)")
        history = list(stored.messages)
    turn = history + req.input_messages()
    # instructions apply to this request only; they are not carried into the stored conversation
    messages = ([Message("system", req.instructions)] if req.instructions else []) + turn
    served = await ctx.manager.get(req.model, remote_ok=True)
    params = req.params(served.default_params)
    deltas = await ctx.chat(served, messages, params, asked_max_tokens=req.max_output_tokens,
                            max_tokens_param="max_output_tokens")
    answer = _Answer(ctx, req, turn)
    if req.stream:
        return StreamingResponse(answer.events(deltas), media_type="text/event-stream", headers=SSE_HEADERS)
    return await unless_client_leaves(request, answer.whole(deltas))


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request):
    stored = ctx_of(request).conversations.get(response_id)
    if stored is None:
        raise _not_found(response_id)
    return stored.body


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request):
    if not ctx_of(request).conversations.delete(response_id):
        raise _not_found(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


def _not_found(response_id: str) -> SlmkitError:
    err = ModelNotFoundError(f"no stored response {response_id!r}")
    err.param, err.code = "response_id", "not_found"
    return err


@dataclass
class _Answer:
    """One response object, built as its text arrives."""

    ctx: ServerContext
    req: ResponseRequest
    turn: list[Message]  # the conversation this answer continues, stored with it
    id: str = field(default_factory=lambda: new_id("resp"))
    message_id: str = field(default_factory=lambda: new_id("msg"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def body(self, status: str, text: str | None, done: Completion | None) -> dict:
        output = [] if text is None else [self.message(text, "completed")]
        incomplete = None
        if done is not None and done.finish_reason == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        fmt = self.req.text.format.type if self.req.text and self.req.text.format else "text"
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "model": self.req.model, "output": output, "instructions": self.req.instructions,
            "previous_response_id": self.req.previous_response_id, "max_output_tokens": self.req.max_output_tokens,
            "temperature": self.req.temperature, "top_p": self.req.top_p, "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [], "text": {"format": {"type": fmt}}, "truncation": "disabled",
            "store": self.req.store is not False, "metadata": self.req.metadata or {},
            "error": None, "incomplete_details": incomplete,
            "usage": _usage(done.usage) if done is not None else None,
        }

    def message(self, text: str | None, status: str) -> dict:
        content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant", "content": content}

    def finish(self, done: Completion) -> dict:
        body = self.body("completed", done.text, done)
        if self.req.store is not False:
            self.ctx.conversations.put(self.id, [*self.turn, Message("assistant", done.text)], body)
        return body

    async def whole(self, deltas: AsyncIterator[RequestOutput]) -> dict:
        return self.finish(await collect(deltas))

    async def events(self, deltas: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
        number = 0

        def event(kind: str, **data) -> str:
            nonlocal number
            number += 1
            return sse({"type": kind, "sequence_number": number - 1, **data}, event=kind)

        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        yield event("response.created", response=self.body("in_progress", None, None))
        yield event("response.in_progress", response=self.body("in_progress", None, None))
        yield event("response.output_item.added", output_index=0, item=self.message(None, "in_progress"))
        yield event("response.content_part.added", **where,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        done = Completion()
        pieces: list[str] = []
        try:
            async for out in deltas:
                if out.text:
                    pieces.append(out.text)
                    yield event("response.output_text.delta", **where, delta=out.text, logprobs=[])
                if out.finished:
                    done.finish_reason, done.usage = out.finish_reason, out.usage
        except Exception as exc:  # noqa: BLE001 - the 200 is sent: the failure is an event, as OpenAI streams it
            err = exc if isinstance(exc, SlmkitError) else SlmkitError(f"internal error: {type(exc).__name__}: {exc}")
            yield event("error", code=err.code or err.error_type, message=err.message, param=err.param)
            failed = self.body("failed", "".join(pieces), None)
            failed["error"] = {"code": err.code or err.error_type, "message": err.message}
            yield event("response.failed", response=failed)
            return
        finally:
            await deltas.aclose()
        done.text = "".join(pieces)
        part = {"type": "output_text", "text": done.text, "annotations": [], "logprobs": []}
        yield event("response.output_text.done", **where, text=done.text, logprobs=[])
        yield event("response.content_part.done", **where, part=part)
        yield event("response.output_item.done", output_index=0, item=self.message(done.text, "completed"))
        final = self.finish(done)
        yield event("response.incomplete" if final["status"] == "incomplete" else "response.completed",
                    response=final)


def _usage(usage: Usage) -> dict:
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}
