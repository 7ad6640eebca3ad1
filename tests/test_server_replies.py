"""`slmkit.server.replies`: a reply split into text and calls, whole or as streamed blocks, the
same for a local model (calls written as text) and a provider model (calls sent parsed). No model."""

from __future__ import annotations

import json

from slmkit.server.generation import Completion
from slmkit.server.replies import ReplyBlocks, split_whole
from slmkit.types import RequestOutput, ToolCall

CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'


def feed_all(blocks: ReplyBlocks, pieces: list[str], finish: str = "stop"):
    events = blocks.start()
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        events += blocks.feed(RequestOutput(piece, [1], finish_reason=finish if last else None))
    return events + blocks.finish()


def shape(events):
    return [(e.kind, e.block.index, e.block.kind) for e in events if e.kind != "delta"]


def test_text_then_calls_stream_as_blocks_in_order():
    text = "Sure." + CALL + CALL.replace('"a": 1', '"a": 5')
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]  # split anywhere, inside tags and JSON too
    blocks = ReplyBlocks(calls_tools=True, id_prefix="toolu")
    events = feed_all(blocks, pieces)
    assert shape(events) == [("open", 0, "text"), ("close", 0, "text"), ("open", 1, "call"), ("close", 1, "call"),
                             ("open", 2, "call"), ("close", 2, "call")]
    assert blocks.text == "Sure." and blocks.called
    assert [json.loads(c.arguments) for c in blocks.calls] == [{"a": 1, "b": 2}, {"a": 5, "b": 2}]
    assert all(c.id.startswith("toolu_") and c.name == "add" for c in blocks.calls)
    streamed = "".join(e.delta for e in events if e.kind == "delta" and e.block.index == 1)
    assert streamed == blocks.calls[0].arguments
    # The whole reply splits the same way.
    whole_text, calls = split_whole(Completion(text=text, finish_reason="stop"), True, "toolu")
    assert whole_text == "Sure." and [c.arguments for c in calls] == [c.arguments for c in blocks.calls]


def test_without_tools_the_text_block_opens_at_once_and_tags_stay_text():
    blocks = ReplyBlocks(calls_tools=False)
    events = feed_all(blocks, [CALL])
    assert shape(events[:1]) == [("open", 0, "text")]  # from start(), before any text
    assert shape(events) == [("open", 0, "text"), ("close", 0, "text")] and blocks.text == CALL
    assert not blocks.called
    assert split_whole(Completion(text=CALL, finish_reason="stop"), False) == (CALL, [])


def test_an_empty_reply_still_has_its_text_block_and_a_cut_call_is_dropped_whole():
    blocks = ReplyBlocks(calls_tools=True)
    assert shape(feed_all(blocks, [""])) == [("open", 0, "text"), ("close", 0, "text")]
    cut = CALL[:30]
    assert split_whole(Completion(text=cut, finish_reason="length"), True) == ("", [])


def test_provider_calls_arrive_parsed_on_the_last_delta():
    blocks = ReplyBlocks(calls_tools=True)
    events = blocks.start() + blocks.feed(RequestOutput("Checking.", [1]))
    events += blocks.feed(RequestOutput("", [], finish_reason="tool_calls",
                                        tool_calls=[ToolCall("call_x", "add", '{"a": 1, "b": 2}')]))
    events += blocks.finish()
    assert shape(events) == [("open", 0, "text"), ("close", 0, "text"), ("open", 1, "call"), ("close", 1, "call")]
    assert blocks.calls == [ToolCall("call_x", "add", '{"a": 1, "b": 2}')]  # the provider's id is kept
    done = Completion(text="Checking.", finish_reason="tool_calls", tool_calls=[ToolCall("call_x", "add", "{}")])
    assert split_whole(done, True) == ("Checking.", [ToolCall("call_x", "add", "{}")])


def test_a_call_cut_short_while_streaming_is_marked_incomplete():
    blocks = ReplyBlocks(calls_tools=True)
    events = feed_all(blocks, [CALL, CALL[:46]], finish="length")  # into the arguments
    assert shape(events)[-2:] == [("open", 1, "call"), ("close", 1, "call")]
    assert [b.complete for b in blocks.blocks] == [True, False] and len(blocks.calls) == 1
