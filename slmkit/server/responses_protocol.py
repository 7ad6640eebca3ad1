"""OpenAI's Responses API request body (``POST /v1/responses``; openai-python
``types/responses/response_create_params.py``), converted once into messages and `SamplingParams`.

Input is text or a list of items: messages (``input_text`` / ``input_image`` / ``output_text``
parts), and the ``function_call`` items of an earlier answer with their ``function_call_output``,
which go into the prompt as /v1/chat/completions's tool calls and tool messages do. Function
``tools``, ``tool_choice`` and ``text.format`` (``json_object`` / ``json_schema``) are the same
constraints as on /v1/chat/completions; built-in tools are refused by name. Fields real clients
send that change nothing on a local server (``store`` aside, which decides whether
``previous_response_id`` can find the answer later) are accepted and ignored.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from slmkit import limits

from slmkit.errors import InvalidParameterError
from slmkit.server.http import parse_nested
from slmkit.server.protocol import JsonInt
from slmkit.structure import Tool, checked_json_schema
from slmkit.types import ContentPart, ImagePart, Message, SamplingParams, TextPart, ToolCall


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


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


MESSAGE_ROLES = ("user", "assistant", "system", "developer")


class InputMessage(_Strict):
    type: Literal["message"] | None = None
    role: Literal[MESSAGE_ROLES]
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


class FunctionCallItem(_Strict):
    """A call the model made, echoed back as input."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: str | None = None

    def to_call(self, where: str) -> ToolCall:
        try:
            arguments = json.loads(self.arguments)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise InvalidParameterError(f"{where}.arguments", "must be a JSON object as text, as the call "
                                        "returned it")
        return ToolCall(self.call_id, self.name, self.arguments)


class FunctionCallOutputItem(_Strict):
    """What the caller's function returned for call ``call_id``: text, or input_text parts."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: Union[str, list[Union[InputText, InputImage]]]
    id: str | None = None
    status: str | None = None

    def to_message(self, where: str) -> Message:
        if isinstance(self.output, str):
            return Message("tool", self.output, tool_call_id=self.call_id)
        for i, part in enumerate(self.output):
            if isinstance(part, InputImage):
                raise InvalidParameterError(f"{where}.output[{i}]", "images in function outputs are not "
                                            "supported here; return text")
        return Message("tool", "\n".join(p.text for p in self.output), tool_call_id=self.call_id)


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None  # calls are always constrained to the parameters' schema
    defer_loading: StrictBool | None = None

    def to_tool(self, where: str) -> Tool:
        parameters = self.parameters if self.parameters is not None else {"type": "object", "properties": {}}
        checked_json_schema(parameters, f"{where}.parameters")
        return Tool(self.name, self.description or "", parameters)


class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None

    def changes(self) -> dict[str, Any]:
        """What `SamplingParams` takes for this format, as /v1/chat/completions's response_format."""
        if self.type == "json_object":
            return {"response_format": "json_object"}
        if self.type != "json_schema":
            return {}
        if self.schema_ is None:
            raise InvalidParameterError("text.format.schema", "is required for type json_schema")
        return {"json_schema": checked_json_schema(self.schema_, "text.format.schema", strict=bool(self.strict))}


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: TextFormat | None = None
    verbosity: str | None = None


def _as(model: type[M], item: M | dict[str, Any], where: str) -> M:
    return item if isinstance(item, model) else parse_nested(model, item, where)


class ResponseRequest(_Strict):
    model: str
    # The item types are listed for the API's schema; a dict that fits none is checked by its type
    # in `input_messages`, for an error that names what is wrong with it.
    input: Union[str, list[Union[InputMessage, FunctionCallItem, FunctionCallOutputItem, dict[str, Any]]]]
    instructions: str | None = None
    max_output_tokens: JsonInt | None = Field(None, ge=1, le=limits.MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=limits.TEMPERATURE_MAX)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: StrictBool = False
    previous_response_id: str | None = None
    store: bool | None = None
    text: TextConfig | None = None
    tools: list[dict[str, Any]] | None = None  # checked one by one (`tool_list`): a built-in tool is named
    tool_choice: Union[Literal["auto", "none", "required"], dict[str, Any], None] = None
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
        if self.background:
            raise InvalidParameterError("background", "background responses are not supported; leave it false")
        if self.conversation is not None:
            raise InvalidParameterError("conversation", "conversations are not stored here; use "
                                        "previous_response_id")
        if self.top_logprobs:
            raise InvalidParameterError("top_logprobs", "logprobs are not returned on /v1/responses; use "
                                        "/v1/chat/completions with logprobs: true")

    def input_messages(self, history: list[Message] = ()) -> list[Message]:
        """This request's new turns (without the instructions or an earlier conversation): messages,
        the model's earlier function calls, and their outputs, each answering a call made before
        it (in `history` or in this input)."""
        if isinstance(self.input, str):
            return [Message("user", self.input)]
        if not self.input:
            raise InvalidParameterError("input", "must not be empty")
        called = {call.id for message in history for call in message.tool_calls}
        messages: list[Message] = []
        for i, item in enumerate(self.input):
            where = f"input[{i}]"
            kind = item.get("type") if isinstance(item, dict) else item.type
            if isinstance(item, InputMessage):
                messages.append(item.to_message(i))
            elif kind == "function_call":
                call = _as(FunctionCallItem, item, where).to_call(where)
                called.add(call.id)
                if messages and messages[-1].role == "assistant":  # parallel calls: one assistant turn
                    last = messages[-1]
                    messages[-1] = Message("assistant", last.content, tool_calls=[*last.tool_calls, call])
                else:
                    messages.append(Message("assistant", "", tool_calls=[call]))
            elif kind == "function_call_output":
                output = _as(FunctionCallOutputItem, item, where)
                if output.call_id not in called:
                    raise InvalidParameterError(f"{where}.call_id", f"no function_call with call_id "
                                                f"{output.call_id!r} before this output")
                messages.append(output.to_message(where))
            elif kind in (None, "message"):
                if not isinstance(item, dict) or item.get("role") not in MESSAGE_ROLES:
                    raise InvalidParameterError(where, "a message needs a role (user, assistant, system or "
                                                "developer) and content: text, or input_text / input_image "
                                                "parts")
                messages.append(parse_nested(InputMessage, item, where).to_message(i))
            else:  # a reasoning item, a built-in tool's call, ...
                raise InvalidParameterError(f"{where}.type", f"{kind!r} items are not supported; send messages "
                                            "(role and content), function_call and function_call_output items")
        return messages

    def tool_list(self) -> list[Tool]:
        """The function tools, each checked; built-in tools (web search, file search, computer use,
        ...) run on OpenAI's side and are refused by name."""
        tools = []
        for i, raw in enumerate(self.tools or []):
            where = f"tools[{i}]"
            kind = raw.get("type")
            if kind is None:
                raise InvalidParameterError(f"{where}.type", "required field is missing (\"function\" for a "
                                            "function tool)")
            if kind != "function":
                raise InvalidParameterError(f"{where}.type", f"{kind!r} is a built-in tool OpenAI runs itself; "
                                            "this server takes function tools (type 'function') that your "
                                            "code runs")
            tools.append(parse_nested(FunctionTool, raw, where, sep=".").to_tool(where))
        return tools

    @property
    def format(self) -> TextFormat | None:
        return self.text.format if self.text else None

    def tool_choice_mode(self, tools: list[Tool]) -> str:
        """Ours: ``auto``, ``none``, ``required`` or the named function."""
        choice = self.tool_choice
        if choice is None or isinstance(choice, str):
            mode = choice or "auto"
        elif choice.get("type") == "function":
            name = choice.get("name")
            if not isinstance(name, str) or not name or set(choice) - {"type", "name"}:
                raise InvalidParameterError("tool_choice", "a function choice is {\"type\": \"function\", "
                                            "\"name\": ...}")
            if name not in [t.name for t in tools]:
                known = ", ".join(t.name for t in tools) or "none given"
                raise InvalidParameterError("tool_choice.name", f"names no tool: {name!r} (tools: {known})")
            mode = name
        else:
            raise InvalidParameterError("tool_choice", f"{choice.get('type')!r} choices are not supported here; "
                                        "use 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}")
        if mode in ("required",) and not tools:
            raise InvalidParameterError("tool_choice", "'required' needs tools")
        return mode

    @property
    def calls_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def params(self, defaults: SamplingParams) -> SamplingParams:
        changes: dict[str, Any] = {"max_tokens": self.max_output_tokens}
        if self.temperature is not None:
            changes["temperature"] = self.temperature
        if self.top_p is not None:
            changes["top_p"] = self.top_p
        tools = self.tool_list()
        mode = self.tool_choice_mode(tools)
        if tools:
            changes.update(tools=tools, tool_choice=mode, parallel_tool_calls=self.parallel_tool_calls is not False)
        if self.format is not None:
            format_changes = self.format.changes()
            if format_changes and self.calls_tools:
                raise InvalidParameterError("text.format", "cannot be combined with tools here; set tool_choice "
                                            "to 'none' or drop the tools")
            changes.update(format_changes)
        return defaults.updated(**changes)
