"""Anthropic's Messages API request body (``POST /v1/messages``; anthropic-sdk-python
``types/message_create_params.py``), converted once into messages and `SamplingParams`.

Content is text or blocks: ``text``, and ``image`` with a base64 or URL source, which becomes an
`ImagePart` exactly as an OpenAI ``image_url`` part does (a provider model gets it; a local text
model refuses it by name), ``tool_use`` (an earlier call) and ``tool_result`` (what it returned),
which go into the prompt as the tool calls and tool messages of /v1/chat/completions do. Client
``tools``, ``tool_choice`` and ``output_config.format`` (a JSON Schema) become the same constraints
as OpenAI's tools and ``response_format``; server tools and extended thinking are refused by name;
fields that change nothing here (``metadata``, ``service_tier``, ...) are accepted and ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from slmkit import limits

from slmkit.errors import InvalidParameterError
from slmkit.server.http import parse_nested
from slmkit.server.protocol import JsonInt, StopString
from slmkit.structure import Tool, checked_json_schema
from slmkit.types import ContentPart, ImagePart, Message, SamplingParams, TextPart, ToolCall


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextBlock(_Strict):
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None  # prompt caching hints: our prefix cache needs none
    citations: list[Any] | None = None


class Base64Source(_Strict):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(_Strict):
    type: Literal["url"]
    url: str


class ImageBlock(_Strict):
    type: Literal["image"]
    source: Annotated[Union[Base64Source, URLSource], Field(discriminator="type")]
    cache_control: dict[str, Any] | None = None

    def to_part(self) -> ImagePart:
        src = self.source
        if isinstance(src, URLSource):
            return ImagePart(src.url)
        return ImagePart(f"data:{src.media_type};base64,{src.data}")


class ToolUseBlock(_Strict):
    """A call the assistant made, echoed back in the history."""

    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None
    caller: dict[str, Any] | None = None


class ToolResultBlock(_Strict):
    """What a call returned: text (or text blocks); ``is_error`` marks a failed call."""

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: Union[str, list[Union[TextBlock, ImageBlock]]] = ""
    is_error: StrictBool = False
    cache_control: dict[str, Any] | None = None

    def to_message(self, where: str) -> Message:
        if isinstance(self.content, str):
            text = self.content
        else:
            for i, block in enumerate(self.content):
                if isinstance(block, ImageBlock):
                    raise InvalidParameterError(f"{where}.content.{i}", "images in tool results are not supported "
                                                "here; return text")
            text = "\n".join(block.text for block in self.content)
        # Chat templates have no error flag for a tool message: the text says it.
        return Message("tool", f"Error: {text}" if self.is_error else text, tool_call_id=self.tool_use_id)


ContentBlock = Annotated[Union[TextBlock, ImageBlock, ToolUseBlock, ToolResultBlock], Field(discriminator="type")]


class AnthropicMessage(_Strict):
    role: Literal["user", "assistant"]
    content: Union[str, list[ContentBlock]]

    def to_messages(self, index: int, open_calls: set[str]) -> list[Message]:
        """This turn as our messages: an assistant turn with its ``tool_use`` calls; a user turn's
        ``tool_result`` blocks as tool messages (each answering one of `open_calls`, the ids the
        previous assistant turn called), its other blocks as a user message."""
        if isinstance(self.content, str):
            return [Message(self.role, self.content)]
        if self.role == "assistant":
            return [self._assistant(index)]
        out: list[Message] = []
        parts: list[ContentPart] = []
        for i, block in enumerate(self.content):
            where = f"messages.{index}.content.{i}"
            if isinstance(block, ToolUseBlock):
                raise InvalidParameterError(f"{where}.type", "tool_use blocks belong in an assistant message")
            if isinstance(block, ToolResultBlock):
                if block.tool_use_id not in open_calls:
                    raise InvalidParameterError(f"{where}.tool_use_id", f"no tool_use block with id "
                                                f"{block.tool_use_id!r} in the previous assistant message")
                if parts:
                    out.append(Message("user", parts))
                    parts = []
                out.append(block.to_message(where))
            else:
                parts.append(_part(block, where))
        return out + ([Message("user", parts)] if parts or not out else [])

    def call_ids(self) -> set[str]:
        if isinstance(self.content, str) or self.role != "assistant":
            return set()
        return {block.id for block in self.content if isinstance(block, ToolUseBlock)}

    def _assistant(self, index: int) -> Message:
        texts, calls = [], []
        for i, block in enumerate(self.content):
            where = f"messages.{index}.content.{i}"
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ToolUseBlock):
                calls.append(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False)))
            else:
                raise InvalidParameterError(f"{where}.type", f"{block.type} blocks belong in a user message")
        return Message("assistant", "".join(texts), tool_calls=calls)


def _part(block: TextBlock | ImageBlock, where: str) -> ContentPart:
    if isinstance(block, TextBlock):
        return TextPart(block.text)
    try:
        return block.to_part()
    except InvalidParameterError as exc:  # named where the caller put it
        raise InvalidParameterError(f"{where}.source", exc.detail) from None


class ToolDefinition(_Strict):
    """A client tool: the model calls it, the caller runs it."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    description: str = ""
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    # Accepted and ignored: calls are always constrained to the schema; nothing is deferred.
    strict: StrictBool | None = None
    cache_control: dict[str, Any] | None = None
    defer_loading: StrictBool | None = None
    eager_input_streaming: StrictBool | None = None
    input_examples: list[Any] | None = None
    allowed_callers: list[str] | None = None


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: StrictBool = False

    @property
    def mode(self) -> str:
        """Ours: ``auto``, ``required``, ``none``, or the tool's name."""
        return {"any": "required", "tool": self.name}.get(self.type, self.type)


class JsonOutputFormat(_Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    effort: str | None = None  # how hard to think: nothing to tune on a local model
    format: JsonOutputFormat | None = None


class MessagesRequest(_Strict):
    model: str
    max_tokens: JsonInt = Field(ge=1, le=limits.MAX_TOKENS_LIMIT)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: Union[str, list[TextBlock], None] = None
    stop_sequences: list[StopString] | None = Field(None, max_length=limits.MAX_STOP_STRINGS)
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: JsonInt | None = Field(None, ge=0)
    stream: StrictBool = False
    tools: list[dict[str, Any]] | None = None  # checked one by one (`tool_list`): a server tool is named
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None
    output_config: OutputConfig | None = None
    # Accepted and ignored: nothing here changes what a local model answers. (anthropic-sdk 2.x
    # sends temperature, top_p and top_k only through extra_body; older clients and tools send them.)
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    container: Any = None
    mcp_servers: list[Any] | None = None
    context_management: Any = None
    cache_control: dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None
    inference_geo: str | None = None
    speed: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None

    def check_supported(self) -> None:
        if self.thinking and self.thinking.get("type") not in (None, "disabled"):
            raise InvalidParameterError("thinking", "extended thinking is not supported; leave it out")
        if self.mcp_servers:
            raise InvalidParameterError("mcp_servers", "MCP servers are not supported by this server")

    def to_messages(self) -> list[Message]:
        system: list[Message] = []
        if isinstance(self.system, str) and self.system:
            system = [Message("system", self.system)]
        elif isinstance(self.system, list) and self.system:
            system = [Message("system", "\n\n".join(block.text for block in self.system))]
        out, open_calls = system, set()
        for i, message in enumerate(self.messages):
            out += message.to_messages(i, open_calls)
            open_calls = message.call_ids()
        return out

    def tool_list(self) -> list[Tool]:
        """The client tools, each checked (a schema that cannot be followed is refused here)."""
        tools = []
        for i, raw in enumerate(self.tools or []):
            where = f"tools.{i}"
            kind = raw.get("type")
            if kind not in (None, "custom"):
                raise InvalidParameterError(f"{where}.type", f"{kind!r} is a server tool, which Anthropic runs "
                                            "itself; this server takes client tools (name, description, "
                                            "input_schema) that your code runs")
            tool = parse_nested(ToolDefinition, raw, where)
            if tool.input_schema.get("type") != "object":
                raise InvalidParameterError(f"{where}.input_schema.type", "must be 'object' (a tool's input is "
                                            "a JSON object)")
            checked_json_schema(tool.input_schema, f"{where}.input_schema")
            tools.append(Tool(tool.name, tool.description, tool.input_schema))
        return tools

    @property
    def calls_tools(self) -> bool:
        return bool(self.tools) and not (self.tool_choice and self.tool_choice.type == "none")

    def params(self, defaults: SamplingParams) -> SamplingParams:
        changes: dict[str, Any] = {"max_tokens": self.max_tokens, "stop": list(self.stop_sequences or [])}
        for name in ("temperature", "top_p", "top_k"):
            value = getattr(self, name)
            if value is not None:
                changes[name] = value
        changes.update(self._tool_changes())
        fmt = self.output_config.format if self.output_config else None
        if fmt is not None:
            if self.calls_tools:
                raise InvalidParameterError("output_config.format", "cannot be combined with tools here; "
                                            "set tool_choice to {\"type\": \"none\"} or drop the tools")
            changes["json_schema"] = checked_json_schema(fmt.schema_, "output_config.format.schema")
        return defaults.updated(**changes)

    def _tool_changes(self) -> dict[str, Any]:
        choice = self.tool_choice or ToolChoice(type="auto")
        tools = self.tool_list()
        if choice.type == "tool" and not choice.name:
            raise InvalidParameterError("tool_choice.name", "is required for type 'tool'")
        if choice.type != "tool" and choice.name is not None:
            raise InvalidParameterError("tool_choice.name", f"only type 'tool' takes a name, got type {choice.type!r}")
        if not tools:
            if choice.type in ("any", "tool"):
                raise InvalidParameterError("tool_choice", f"type {choice.type!r} needs tools")
            return {}
        names = [t.name for t in tools]
        if choice.type == "tool" and choice.name not in names:
            raise InvalidParameterError("tool_choice.name", f"names no tool: {choice.name!r} "
                                        f"(tools: {', '.join(names)})")
        return {"tools": tools, "tool_choice": choice.mode, "parallel_tool_calls": not choice.disable_parallel_tool_use}
