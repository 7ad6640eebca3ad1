"""Tool calls as text: into the prompt for templates that cannot render them, and out of the
generated text into `ToolCall`s, whole or streamed as OpenAI-style deltas.

The format is the one `slmkit.structure` constrains the output to (Hermes / Qwen 2.5)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Sequence

from slmkit.structure import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, Tool, default_tools_block
from slmkit.types import Message, ToolCall

_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(\{.*?\})\s*" + re.escape(TOOL_CALL_CLOSE), re.S)
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=\S)', re.S)


def new_call_id(prefix: str = "call") -> str:
    """A fresh call id; APIs differ in the prefix (OpenAI ``call_``, Anthropic ``toolu_``)."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def fold_tool_messages(messages: Sequence[Message], tools: Sequence[Tool]) -> list[Message]:
    """The conversation for a template that knows no tools: the tools described in the system
    message (`default_tools_block`), assistant calls written out as ``<tool_call>`` blocks and
    tool results as ``<tool_response>`` user turns (as Qwen 2.5's own template renders them)."""
    out: list[Message] = []
    for message in messages:
        if message.role == "tool":
            block = f"<tool_response>\n{message.text}\n</tool_response>"
            if out and out[-1].role == "user" and out[-1].text.startswith("<tool_response>"):
                out[-1] = Message("user", out[-1].text + "\n" + block)
            else:
                out.append(Message("user", block))
        elif message.tool_calls:
            calls = "\n".join(format_call(c) for c in message.tool_calls)
            out.append(Message(message.role, (message.text + "\n" if message.text else "") + calls))
        else:
            out.append(message)
    if tools:
        block = default_tools_block(list(tools))
        if out and out[0].role == "system":
            out[0] = Message("system", f"{out[0].text}\n\n{block}")
        else:
            out.insert(0, Message("system", block))
    return out


def format_call(call: ToolCall) -> str:
    arguments = call.arguments if call.arguments.strip() else "{}"
    return f'{TOOL_CALL_OPEN}\n{{"name": {json.dumps(call.name)}, "arguments": {arguments}}}\n{TOOL_CALL_CLOSE}'


def parse_tool_calls(text: str, id_prefix: str = "call") -> tuple[str, list[ToolCall]]:
    """(the text outside calls, the calls) of a whole reply. Only complete calls whose JSON
    parses count; a call cut short (max_tokens) is dropped from the text as the stream drops it."""
    calls: list[ToolCall] = []
    content = []
    last = 0
    for match in _CALL.finditer(text):
        try:
            body = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            continue
        head = _HEAD.match(match.group(1))
        arguments = body.get("arguments", {})
        # The arguments as the model wrote them when they are the tail of the object (what the
        # stream sent), else re-serialized.
        raw = match.group(1)[head.end():].rstrip()[:-1].rstrip() if head else None
        if raw is None or _loads(raw) != arguments:
            raw = json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCall(new_call_id(id_prefix), body["name"], raw))
        content.append(text[last:match.start()])
        last = match.end()
    tail = text[last:]
    unfinished = tail.find(TOOL_CALL_OPEN)
    if unfinished >= 0:
        tail = tail[:unfinished]
    if not calls:
        return (text if unfinished < 0 else text[:unfinished]), []
    content.append(tail)
    return "".join(content).strip(), calls


def _loads(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


@dataclass
class ToolCallDelta:
    """Part of a streamed call: the first delta of call `index` has `id` and `name`, later ones
    add to its ``arguments`` text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


def merge_deltas(deltas: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Consecutive deltas of one call as one (a call's start and its first arguments)."""
    merged: list[ToolCallDelta] = []
    for delta in deltas:
        if merged and merged[-1].index == delta.index and delta.name is None:
            merged[-1].arguments += delta.arguments
        else:
            merged.append(ToolCallDelta(delta.index, delta.id, delta.name, delta.arguments))
    return merged


class ToolCallStream:
    """Splits streamed text into content and tool-call deltas. Holds back only what could still
    turn into ``<tool_call>`` (in content) or the call's closing ``}`` (in arguments)."""

    def __init__(self, id_prefix: str = "call") -> None:
        self._id_prefix = id_prefix
        self._buffer = ""
        self._in_call = False
        self._head_done = False
        self._sent_args = 0
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """(content to send now, call deltas to send now) after `text` arrived."""
        self._buffer += text
        content, deltas = [], []
        while True:
            if not self._in_call:
                at = self._buffer.find(TOOL_CALL_OPEN)
                if at < 0:
                    cut = len(self._buffer) - _partial_suffix(self._buffer, TOOL_CALL_OPEN)
                    if self.calls and not self._buffer[:cut].strip():
                        break  # whitespace between or after calls is no content
                    content.append(self._buffer[:cut])
                    self._buffer = self._buffer[cut:]
                    break
                if not (self.calls and not self._buffer[:at].strip()):
                    content.append(self._buffer[:at])
                self._buffer = self._buffer[at + len(TOOL_CALL_OPEN):]
                self._in_call, self._head_done, self._sent_args = True, False, 0
                continue
            if not self._head_done:
                head = _HEAD.match(self._buffer)
                if head is None:
                    break
                call = ToolCall(new_call_id(self._id_prefix), json.loads(f'"{head.group(1)}"'), "")
                self.calls.append(call)
                deltas.append(ToolCallDelta(len(self.calls) - 1, call.id, call.name))
                self._buffer = self._buffer[head.end():]
                self._head_done = True
            end = self._buffer.find(TOOL_CALL_CLOSE)
            body = self._buffer if end < 0 else self._buffer[:end]
            safe = _arguments_so_far(body, complete=end >= 0)
            new = safe[self._sent_args:]
            if new:
                self.calls[-1].arguments += new
                deltas.append(ToolCallDelta(len(self.calls) - 1, arguments=new))
                self._sent_args = len(safe)
            if end < 0:
                break
            self._buffer = self._buffer[end + len(TOOL_CALL_CLOSE):].lstrip("\n")
            self._in_call = False
        return "".join(content), deltas

    @property
    def completed(self) -> list[ToolCall]:
        """The calls whose closing tag has arrived."""
        return self.calls[:-1] if self._in_call else list(self.calls)

    def finish(self) -> str:
        """What was held back, as content (a call cut short stays unfinished)."""
        rest, self._buffer = ("" if self._in_call else self._buffer), ""
        return "" if self.calls and not rest.strip() else rest


def _arguments_so_far(body: str, *, complete: bool) -> str:
    """The arguments in a call's text after its ``"arguments": ``: all but the object's closing
    ``}``, and while the call is open, all but a last ``}`` that may be that closing one."""
    if complete:
        stripped = body.rstrip()
        return stripped[:-1].rstrip() if stripped.endswith("}") else stripped
    brace = body.rfind("}")
    if brace >= 0 and TOOL_CALL_CLOSE.startswith(body[brace + 1:].lstrip()):
        return body[:brace]
    return body


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
