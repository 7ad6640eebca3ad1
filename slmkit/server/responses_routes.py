"""OpenAI's Responses API: ``POST /v1/responses`` (whole or streamed), ``GET`` and ``DELETE
/v1/responses/{id}``.

A streamed answer is the event sequence openai-python reads (``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` ..., the matching ``.done`` events, ``response.completed``), each
an SSE event named by its type and numbered by ``sequence_number``. A function call is an output
item of its own: ``response.output_item.added``, ``response.function_call_arguments.delta`` ...,
``response.function_call_arguments.done``, ``response.output_item.done``. ``previous_response_id``
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
from slmkit.server.replies import Block, BlockEvent, ReplyBlocks, split_whole
from slmkit.server.responses_protocol import ResponseRequest
from slmkit.structure import Tool
from slmkit.types import Message, RequestOutput, SamplingParams, Usage

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
    turn = history + req.input_messages(history)
    # instructions apply to this request only; they are not carried into the stored conversation
    messages = ([Message("system", req.instructions)] if req.instructions else []) + turn
    served = await ctx.manager.get(req.model, remote_ok=True)
    params = req.params(served.default_params)
    deltas = await ctx.chat(served, messages, params, asked_max_tokens=req.max_output_tokens,
                            max_tokens_param="max_output_tokens")
    answer = _Answer(ctx, req, turn, params)
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
    """One response object, built as its text and calls arrive."""

    ctx: ServerContext
    req: ResponseRequest
    turn: list[Message]  # the conversation this answer continues, stored with it
    params: SamplingParams
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    item_ids: dict[int, str] = field(default_factory=dict)  # output index -> the item's id

    def body(self, status: str, output: list[dict], done: Completion | None) -> dict:
        incomplete = None
        if done is not None and done.finish_reason == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        fmt = self.req.format.model_dump(by_alias=True, exclude_none=True) if self.req.format else {"type": "text"}
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "model": self.req.model, "output": output, "instructions": self.req.instructions,
            "previous_response_id": self.req.previous_response_id, "max_output_tokens": self.req.max_output_tokens,
            "temperature": self.req.temperature, "top_p": self.req.top_p,
            "parallel_tool_calls": self.params.parallel_tool_calls,
            "tool_choice": self.req.tool_choice or "auto", "tools": [_function_tool(t) for t in self.params.tools],
            "text": {"format": fmt}, "truncation": "disabled",
            "store": self.req.store is not False, "metadata": self.req.metadata or {},
            "error": None, "incomplete_details": incomplete,
            "usage": _usage(done.usage) if done is not None else None,
        }

    def item_id(self, index: int, kind: str) -> str:
        if index not in self.item_ids:
            self.item_ids[index] = new_id("msg" if kind == "text" else "fc")
        return self.item_ids[index]

    def item(self, block: Block, status: str) -> dict:
        """The output item of one block: an assistant message, or a function call."""
        item_id = self.item_id(block.index, block.kind)
        opening = status == "in_progress"  # its arguments / text follow as deltas
        if block.kind == "call":
            status = status if block.complete else "incomplete"
            return {"type": "function_call", "id": item_id, "call_id": block.call.id, "name": block.call.name,
                    "arguments": "" if opening else block.call.arguments, "status": status}
        content = [] if opening else [_text_part(block.text)]
        return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}

    def finish(self, done: Completion, blocks: list[Block]) -> dict:
        body = self.body("completed", [self.item(b, "completed") for b in blocks], done)
        if self.req.store is not False:
            text = "".join(b.text for b in blocks if b.kind == "text")
            calls = [b.call for b in blocks if b.call is not None and b.complete]
            self.ctx.conversations.put(self.id, [*self.turn, Message("assistant", text, tool_calls=calls)], body)
        return body

    async def whole(self, deltas: AsyncIterator[RequestOutput]) -> dict:
        done = await collect(deltas)
        text, calls = split_whole(done, self.req.calls_tools)
        blocks = [Block(0, "text", text)] if text or not calls else []
        blocks += [Block(len(blocks) + i, "call", call.arguments, call) for i, call in enumerate(calls)]
        return self.finish(done, blocks)

    async def events(self, deltas: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
        number = 0

        def event(kind: str, **data) -> str:
            nonlocal number
            number += 1
            return sse({"type": kind, "sequence_number": number - 1, **data}, event=kind)

        blocks = ReplyBlocks(self.req.calls_tools)
        yield event("response.created", response=self.body("in_progress", [], None))
        yield event("response.in_progress", response=self.body("in_progress", [], None))
        for step in blocks.start():
            for line in self._block_events(step, event):
                yield line
        done = Completion()
        try:
            async for out in deltas:
                for step in blocks.feed(out):
                    for line in self._block_events(step, event):
                        yield line
                if out.finished:
                    done.finish_reason, done.usage = out.finish_reason, out.usage
        except Exception as exc:  # noqa: BLE001 - the 200 is sent: the failure is an event, as OpenAI streams it
            err = exc if isinstance(exc, SlmkitError) else SlmkitError(f"internal error: {type(exc).__name__}: {exc}")
            yield event("error", code=err.code or err.error_type, message=err.message, param=err.param)
            failed = self.body("failed", [self.item(b, "incomplete") for b in blocks.blocks], None)
            failed["error"] = {"code": err.code or err.error_type, "message": err.message}
            yield event("response.failed", response=failed)
            return
        finally:
            await deltas.aclose()
        for step in blocks.finish():
            for line in self._block_events(step, event):
                yield line
        final = self.finish(done, blocks.blocks)
        yield event("response.incomplete" if final["status"] == "incomplete" else "response.completed",
                    response=final)

    def _block_events(self, step: BlockEvent, event) -> list[str]:
        """A block's opening, growth or end as the Responses stream's events."""
        block = step.block
        where = {"item_id": self.item_id(block.index, block.kind), "output_index": block.index}
        if block.kind == "call":
            if step.kind == "open":
                return [event("response.output_item.added", output_index=block.index,
                              item=self.item(block, "in_progress"))]
            if step.kind == "delta":
                return [event("response.function_call_arguments.delta", **where, delta=step.delta)]
            return [event("response.function_call_arguments.done", **where, name=block.call.name,
                          arguments=block.call.arguments),
                    event("response.output_item.done", output_index=block.index, item=self.item(block, "completed"))]
        where["content_index"] = 0
        if step.kind == "open":
            return [event("response.output_item.added", output_index=block.index, item=self.item(block, "in_progress")),
                    event("response.content_part.added", **where, part=_text_part(""))]
        if step.kind == "delta":
            return [event("response.output_text.delta", **where, delta=step.delta, logprobs=[])]
        return [event("response.output_text.done", **where, text=block.text, logprobs=[]),
                event("response.content_part.done", **where, part=_text_part(block.text)),
                event("response.output_item.done", output_index=block.index, item=self.item(block, "completed"))]


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _function_tool(tool: Tool) -> dict:
    return {"type": "function", "name": tool.name, "description": tool.description or None,
            "parameters": tool.parameters, "strict": True}


def _usage(usage: Usage) -> dict:
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}
