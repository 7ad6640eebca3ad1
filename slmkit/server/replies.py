"""A reply split into its text and its tool calls, the same way on every API route.

A local model writes its calls as text (``<tool_call>`` blocks, `slmkit.text.tool_calls`): they are
parsed out of a whole reply, or split off a streamed one as they arrive. A provider model sends
them already parsed (`RequestOutput.tool_calls`, on its last delta). The chat-completions stream
sends text and call deltas as they are (`ReplySplitter`); the Anthropic and Responses streams send
a reply as a list of blocks, each text or one call, opened and closed in turn (`ReplyBlocks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from slmkit.server.generation import Completion
from slmkit.text.tool_calls import ToolCallDelta, ToolCallStream, parse_tool_calls
from slmkit.types import RequestOutput, ToolCall


def split_whole(done: Completion, calls_tools: bool, id_prefix: str = "call") -> tuple[str, list[ToolCall]]:
    """(text, calls) of a whole reply. A local model's calls count only when it stopped or ran out
    of tokens after them (a call cut short is dropped, as the stream drops it)."""
    if done.tool_calls:
        return done.text, list(done.tool_calls)
    if calls_tools and done.finish_reason in ("stop", "length"):
        return parse_tool_calls(done.text, id_prefix)
    return done.text, []


class ReplySplitter:
    """Splits one streamed reply's deltas into (text, call deltas) to send now."""

    def __init__(self, calls_tools: bool, id_prefix: str = "call") -> None:
        self._stream = ToolCallStream(id_prefix) if calls_tools else None
        self._provider_calls = 0

    def feed(self, out: RequestOutput) -> tuple[str, list[ToolCallDelta]]:
        text, deltas = out.text, []
        if self._stream is not None:
            text, deltas = self._stream.feed(out.text)
            if out.finished:
                text += self._stream.finish()
        for call in out.tool_calls:
            deltas.append(ToolCallDelta(self._provider_calls, call.id, call.name, call.arguments))
            self._provider_calls += 1
        return text, deltas

    @property
    def called(self) -> bool:
        """Whether the reply has started a call so far."""
        return self._provider_calls > 0 or bool(self._stream is not None and self._stream.calls)

    @property
    def in_call(self) -> bool:
        """Whether the last call is still open (its closing tag not yet written)."""
        return self._stream is not None and len(self._stream.completed) < len(self._stream.calls)


@dataclass
class Block:
    """One block of a reply: text, or one call (its arguments as they stream in `text`)."""

    index: int
    kind: Literal["text", "call"]
    text: str = ""
    call: ToolCall | None = None
    complete: bool = True  # False for a call cut short (max_tokens, an error)


@dataclass
class BlockEvent:
    kind: Literal["open", "delta", "close"]
    block: Block
    delta: str = ""


@dataclass
class ReplyBlocks:
    """A streamed reply as blocks opened, extended and closed in order. Without tools the one text
    block opens at once (`start`); with tools a block opens when its first text or call arrives.
    A reply with nothing in it still has its (empty) text block, as the whole reply has."""

    calls_tools: bool
    id_prefix: str = "call"
    blocks: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._splitter = ReplySplitter(self.calls_tools, self.id_prefix)
        self._open: Block | None = None

    @property
    def called(self) -> bool:
        return any(b.kind == "call" for b in self.blocks)

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.blocks if b.kind == "text")

    @property
    def calls(self) -> list[ToolCall]:
        """The complete calls (one cut short is not a call to run)."""
        return [b.call for b in self.blocks if b.call is not None and b.complete]

    def start(self) -> list[BlockEvent]:
        return [] if self.calls_tools else self._begin("text")

    def feed(self, out: RequestOutput) -> list[BlockEvent]:
        text, deltas = self._splitter.feed(out)
        events: list[BlockEvent] = []
        if text:
            if self._open is None or self._open.kind != "text":
                events += self._begin("text")
            events += self._extend(text)
        for delta in deltas:  # in order: a call's start, then its arguments, then the next call
            if delta.name is not None:
                events += self._begin("call", ToolCall(delta.id or "", delta.name, ""))
            if delta.arguments:
                self._open.call.arguments += delta.arguments
                events += self._extend(delta.arguments)
        return events

    def finish(self) -> list[BlockEvent]:
        events = [] if self.blocks else self._begin("text")
        if self._open is not None and self._open.kind == "call" and self._splitter.in_call:
            self._open.complete = False
        return events + self._close()

    def _begin(self, kind: Literal["text", "call"], call: ToolCall | None = None) -> list[BlockEvent]:
        events = self._close()
        self._open = Block(len(self.blocks), kind, call=call)
        self.blocks.append(self._open)
        return events + [BlockEvent("open", self._open)]

    def _extend(self, piece: str) -> list[BlockEvent]:
        self._open.text += piece
        return [BlockEvent("delta", self._open, piece)]

    def _close(self) -> list[BlockEvent]:
        if self._open is None:
            return []
        block, self._open = self._open, None
        return [BlockEvent("close", block)]
