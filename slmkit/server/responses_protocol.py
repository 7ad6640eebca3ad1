"""OpenAI's Responses API request body (``POST /v1/responses``; openai-python
``types/responses/response_create_params.py``), converted once into messages and `SamplingParams`.

Input is text or a list of message items (``input_text`` / ``input_image`` / ``output_text``
parts). Fields real clients send that change nothing on a local server (``store`` aside, which
decides whether ``previous_response_id`` can find the answer later) are accepted and ignored;
tools and structured output are refused by name, as on /v1/chat/completions.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from slmkit import limits

from slmkit.errors import InvalidParameterError
from slmkit.server.protocol import JsonInt
from slmkit.types import ContentPart, ImagePart, Message, SamplingParams, TextPart


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputText(_Strict):
    type: Literal["input_text", "output_text", "text"]
    text: str
    annotations: list[Any] | None = None  # on output_text items echoed back from an earlier answer
    logprobs: list[Any] | None = None


class InputImage(_Strict):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class InputMessage(_Strict):
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: Union[str, list[Union[InputText, InputImage]]]
    id: str | None = None  # an output message echoed back as input
    status: str | None = None

    def to_message(self, index: int) -> Message:
        role = "system" if self.role == "developer" else self.role
        if isinstance(self.content, str):
            return Message(role, self.content)
        parts: list[ContentPart] = []
        for i, part in enumerate(self.content):
            where = f"input[{index}].content[{i}]"
            if isinstance(part, InputText):
                parts.append(TextPart(part.text))
            elif part.image_url is None:
                raise InvalidParameterError(f"{where}.file_id", "files are not supported; send the image as "
                                            "image_url (a data: URL or an http(s) URL)")
            else:
                try:
                    parts.append(ImagePart(part.image_url, part.detail))
                except InvalidParameterError as exc:
                    raise InvalidParameterError(f"{where}.image_url", exc.detail) from None
        return Message(role, parts)


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponseRequest(_Strict):
    model: str
    input: Union[str, list[Union[InputMessage, dict[str, Any]]]]
    instructions: str | None = None
    max_output_tokens: JsonInt | None = Field(None, ge=1, le=limits.MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=limits.TEMPERATURE_MAX)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: StrictBool = False
    previous_response_id: str | None = None
    store: bool | None = None
    text: TextConfig | None = None
    tools: list[dict] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    top_logprobs: JsonInt | None = Field(None, ge=0, le=limits.MAX_TOP_LOGPROBS)
    # Accepted and ignored: nothing here changes what a local model answers.
    metadata: dict[str, Any] | None = None
    user: str | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: dict[str, Any] | None = None
    include: list[str] | None = None
    stream_options: dict[str, Any] | None = None
    background: bool | None = None
    max_tool_calls: JsonInt | None = None
    prompt: dict[str, Any] | None = None
    conversation: Any = None

    def check_supported(self) -> None:
        if self.tools:
            raise InvalidParameterError("tools", "tool calling is not supported by this server yet")
        if self.text and self.text.format and self.text.format.type == "json_schema":
            raise InvalidParameterError("text.format", "json_schema is not supported yet; use "
                                        "{\"type\": \"json_object\"}")
        if self.background:
            raise InvalidParameterError("background", "background responses are not supported; leave it false")
        if self.conversation is not None:
            raise InvalidParameterError("conversation", "conversations are not stored here; use "
                                        "previous_response_id")
        if self.top_logprobs:
            raise InvalidParameterError("top_logprobs", "logprobs are not returned on /v1/responses; use "
                                        "/v1/chat/completions with logprobs: true")

    def input_messages(self) -> list[Message]:
        """This request's new turns (without the instructions or an earlier conversation)."""
        if isinstance(self.input, str):
            return [Message("user", self.input)]
        if not self.input:
            raise InvalidParameterError("input", "must not be empty")
        messages = []
        for i, item in enumerate(self.input):
            if isinstance(item, dict) and "role" in item:
                raise InvalidParameterError(f"input[{i}]", "a message needs a role (user, assistant, system or "
                                            "developer) and content: text, or input_text / input_image parts")
            if isinstance(item, dict):  # a function call, reasoning item, ... (anything not a message)
                kind = item.get("type", "unknown")
                raise InvalidParameterError(f"input[{i}].type", f"{kind!r} items are not supported; send "
                                            "messages (role and content)")
            messages.append(item.to_message(i))
        return messages

    def params(self, defaults: SamplingParams) -> SamplingParams:
        changes: dict[str, Any] = {"max_tokens": self.max_output_tokens}
        if self.temperature is not None:
            changes["temperature"] = self.temperature
        if self.top_p is not None:
            changes["top_p"] = self.top_p
        if self.text and self.text.format and self.text.format.type == "json_object":
            changes["response_format"] = "json_object"
        return defaults.updated(**changes)
