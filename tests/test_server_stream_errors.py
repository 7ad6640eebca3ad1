"""After a 200 has gone out, a failing generation on the Responses and Anthropic streams is an
error event in each API's own shape, and the engine request is closed (no server needed)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from test_server_ollama import FakeStream

from slmkit.errors import RequestTimeoutError
from slmkit.server.anthropic_routes import _Reply
from slmkit.server.conversations import ConversationStore
from slmkit.server.responses_protocol import ResponseRequest
from slmkit.server.responses_routes import _Answer
from slmkit.types import Message, RequestOutput, SamplingParams, Usage


def parse_sse(chunks: list[str]) -> list[tuple[str, dict]]:
    events = []
    for chunk in chunks:
        head, data = chunk.strip().split("\n")
        events.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def drain(agen) -> list[tuple[str, dict]]:
    async def run():
        return [chunk async for chunk in agen]

    return parse_sse(asyncio.run(run()))


def test_anthropic_stream_error_is_an_error_event():
    stream = FakeStream([RequestOutput("Hel", [5])], error=RequestTimeoutError("ran past 1 s"))
    events = drain(_Reply("msg_1", "m", calls_tools=False).events(stream))
    assert [e for e, _ in events] == ["message_start", "content_block_start", "ping", "content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "timeout_error", "message": "ran past 1 s"}}
    assert stream.closed


def test_responses_stream_error_is_an_error_event_then_failed_and_nothing_is_stored():
    ctx = SimpleNamespace(conversations=ConversationStore())
    answer = _Answer(ctx, ResponseRequest(model="m", input="hi"), [Message("user", "hi")], SamplingParams())
    stream = FakeStream([RequestOutput("Hel", [5])], error=RequestTimeoutError("ran past 1 s"))
    events = drain(answer.events(stream))
    assert [e for e, _ in events][-3:] == ["response.output_text.delta", "error", "response.failed"]
    assert events[-2][1]["code"] == "timeout" and events[-2][1]["message"] == "ran past 1 s"
    assert events[-1][1]["response"]["status"] == "failed" and stream.closed and len(ctx.conversations) == 0


def test_the_conversation_store_keeps_the_newest():
    store = ConversationStore(capacity=2)
    for i in range(3):
        store.put(f"r{i}", [Message("user", str(i))], {"id": f"r{i}"})
    assert store.get("r0") is None and store.get("r2").body == {"id": "r2"} and len(store) == 2


def test_a_finished_answer_is_stored_with_its_conversation():
    ctx = SimpleNamespace(conversations=ConversationStore())
    answer = _Answer(ctx, ResponseRequest(model="m", input="hi"), [Message("user", "hi")], SamplingParams())
    done = FakeStream([RequestOutput("Hello", [5]), RequestOutput("", [], finish_reason="stop", usage=Usage(3, 1))])
    events = drain(answer.events(done))
    assert events[-1][0] == "response.completed" and events[-1][1]["response"]["usage"]["total_tokens"] == 4
    stored = ctx.conversations.get(answer.id)
    assert [m.content for m in stored.messages] == ["hi", "Hello"]
