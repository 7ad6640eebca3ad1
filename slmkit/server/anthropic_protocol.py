"""Anthropic's Messages API request body (``POST /v1/messages``; anthropic-sdk-python
``types/message_create_params.py``), converted once into messages and `SamplingParams`.

Content is text or blocks: ``text``, and ``image`` with a base64 or URL source, which becomes an
`ImagePart` exactly as an OpenAI ``image_url`` part does (a provider model gets it; a local text
model refuses it by name). Tools and extended thinking are refused by name; fields that change
nothing here (``metadata``, ``service_tier``, ...) are accepted and ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from slmkit import limits

from slmkit.errors import InvalidParameterError
from slmkit.server.protocol import JsonInt, StopString
from slmkit.types import ContentPart, ImagePart, Message, SamplingParams, TextPart


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


ContentBlock = Annotated[Union[TextBlock, ImageBlock], Field(discriminator="type")]


class AnthropicMessage(_Strict):
    role: Literal["user", "assistant"]
    content: Union[str, list[ContentBlock]]

    def to_message(self, index: int) -> Message:
        if isinstance(self.content, str):
            return Message(self.role, self.content)
        parts: list[ContentPart] = []
        for i, block in enumerate(self.content):
            if isinstance(block, TextBlock):
                parts.append(TextPart(block.text))
                continue
            try:
                parts.append(block.to_part())
            except InvalidParameterError as exc:  # named where the caller put it
                raise InvalidParameterError(f"messages.{index}.content.{i}.source", exc.detail) from None
        return Message(self.role, parts)


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
    tools: list[dict] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None  # its effort is ignored; a format is refused
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
        if self.tools:
            raise InvalidParameterError("tools", "tool use is not supported by this server yet")
        if self.thinking and self.thinking.get("type") not in (None, "disabled"):
            raise InvalidParameterError("thinking", "extended thinking is not supported; leave it out")
        if self.output_config and self.output_config.get("format"):
            raise InvalidParameterError("output_config.format", "structured output is not supported yet; "
                                        "describe the JSON you want in the prompt")
        if self.mcp_servers:
            raise InvalidParameterError("mcp_servers", "MCP servers are not supported by this server")

    def to_messages(self) -> list[Message]:
        system: list[Message] = []
        if isinstance(self.system, str) and self.system:
            system = [Message("system", self.system)]
        elif isinstance(self.system, list) and self.system:
            system = [Message("system", "\n\n".join(block.text for block in self.system))]
        return system + [m.to_message(i) for i, m in enumerate(self.messages)]

    def params(self, defaults: SamplingParams) -> SamplingParams:
        changes: dict[str, Any] = {"max_tokens": self.max_tokens, "stop": list(self.stop_sequences or [])}
        for name in ("temperature", "top_p", "top_k"):
            value = getattr(self, name)
            if value is not None:
                changes[name] = value
        return defaults.updated(**changes)
