"""OpenAI-shaped request bodies (also what Azure AI Inference sends), converted once into our
types. Unknown fields are refused like OpenAI does (fields OpenAI accepts that change nothing
here, like ``metadata`` or ``service_tier``, are accepted and ignored); vLLM's extras (top_k, min_p,
repetition_penalty, ignore_eos, stop_token_ids) are accepted, and slmkit's ``speculative``."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from slmkit import limits
from slmkit.errors import InvalidParameterError
from slmkit.structure import checked_json_schema
from slmkit.types import ContentPart, ImagePart, Message, SamplingParams, TextPart


def _integral(value: Any) -> Any:
    """JSON Schema's integers include ``2.0``; a JSON parser gives a float for it."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


# An integer as JSON Schema means it: 2 and 2.0, never "2" or 2.5.
JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]


StopString = Annotated[str, Field(min_length=1, max_length=limits.MAX_STOP_LENGTH)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextPartBody(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str  # checked by ImagePart, whose messages name the part
    detail: Literal["auto", "low", "high"] | None = None


class ImageURLPart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPartBody = Annotated[Union[TextPartBody, ImageURLPart], Field(discriminator="type")]


class FunctionCallBody(_Open):
    name: str
    arguments: Union[str, dict[str, Any]] = "{}"


class ToolCallBody(_Open):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCallBody


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPartBody], None] = None  # null: an assistant turn of tool calls only
    name: str | None = None
    tool_calls: list[ToolCallBody] | None = None
    tool_call_id: str | None = None

    def to_message(self, index: int) -> Message:
        """Text stays text; parts become `TextPart` / `ImagePart` (a local model refuses images
        when its chat template is applied, a remote one gets them as they came)."""
        content = self.content
        if content is None and self.tool_calls:
            content = ""
        if content is None:
            raise InvalidParameterError(f"messages[{index}].content", "must be text or content parts")
        role = "system" if self.role == "developer" else self.role
        calls = [c.model_dump() for c in self.tool_calls or []]
        if isinstance(content, str):
            return Message(role, content, tool_calls=calls, tool_call_id=self.tool_call_id)
        parts: list[ContentPart] = []
        for i, part in enumerate(content):
            if isinstance(part, TextPartBody):
                parts.append(TextPart(part.text))
                continue
            try:
                parts.append(ImagePart(part.image_url.url, part.image_url.detail))
            except InvalidParameterError as exc:  # named where the caller put it
                raise InvalidParameterError(f"messages[{index}].content[{i}].{exc.param}",
                                            exc.detail) from None
        return Message(role, parts)


class StreamOptions(_Strict):
    include_usage: bool = False


class JsonSchemaFormat(_Open):
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def changes(self) -> dict[str, Any]:
        """The `SamplingParams` fields this format sets. Without ``strict: true`` keywords the
        grammar cannot enforce are ignored (best effort); with it they are a 400, as OpenAI's
        strict mode refuses schemas it cannot guarantee."""
        if self.type == "json_object":
            return {"response_format": "json_object"}
        if self.type != "json_schema":
            return {}
        param = "response_format.json_schema.schema"
        if self.json_schema is None or self.json_schema.schema_ is None:
            raise InvalidParameterError(param, "is required for type json_schema")
        return {"json_schema": checked_json_schema(self.json_schema.schema_, param, strict=bool(self.json_schema.strict))}


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"] = "function"
    function: NamedFunction


def tool_choice_name(choice: Union[str, NamedToolChoice, None]) -> str:
    """``auto`` / ``none`` / ``required``, or the named function's name."""
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.function.name


class _Sampling(_Strict):
    """Fields the chat and completions endpoints share."""

    model: str
    temperature: float | None = Field(None, ge=0, le=limits.TEMPERATURE_MAX)
    top_p: float | None = Field(None, gt=0, le=1)
    n: JsonInt = Field(1, ge=1, le=limits.MAX_CHOICES)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: Union[StopString, Annotated[list[StopString], Field(max_length=4)], None] = None
    max_tokens: JsonInt | None = Field(None, ge=1)
    presence_penalty: float | None = Field(None, ge=-limits.PENALTY_RANGE, le=limits.PENALTY_RANGE)
    frequency_penalty: float | None = Field(None, ge=-limits.PENALTY_RANGE, le=limits.PENALTY_RANGE)
    logit_bias: dict[str, float] | None = Field(None, max_length=limits.MAX_LOGIT_BIAS_ENTRIES)
    seed: JsonInt | None = Field(None, ge=limits.RANDOM_SEED, le=limits.SEED_MAX)
    # Sent by real clients, meaningless to a local server, and accepted by OpenAI's API: ignored.
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    # vLLM / llama-server extras
    top_k: JsonInt | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    ignore_eos: StrictBool = False
    stop_token_ids: list[JsonInt] | None = Field(None, max_length=limits.MAX_STOP_TOKEN_IDS)
    # slmkit: this request's speculation (off, ngram, draft); None: the server's --speculative
    speculative: StrictStr | None = None

    def sampling_params(self, defaults: SamplingParams, *, max_tokens: int | None,
                        logprobs: int | None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4:
            raise InvalidParameterError("stop", f"at most 4 stop sequences, got {len(stop)}")
        given = {
            "temperature": self.temperature, "top_p": self.top_p, "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty, "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "top_k": None if self.top_k is None else max(0, self.top_k),
        }
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        bias = {}
        for key, value in (self.logit_bias or {}).items():
            try:
                token_id = int(key)
            except ValueError:
                raise InvalidParameterError("logit_bias", f"keys must be token ids, got {key!r}") from None
            if not -100 <= value <= 100:
                raise InvalidParameterError("logit_bias", f"bias for {key} must be in [-100, 100]")
            bias[token_id] = value
        changes.update(
            max_tokens=max_tokens, stop=stop, seed=self.seed, logit_bias=bias, logprobs=logprobs,
            ignore_eos=self.ignore_eos, stop_token_ids=list(self.stop_token_ids or []),
            speculative=self.speculative,
        )
        return defaults.updated(**changes)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=limits.MAX_MESSAGES)
    max_completion_tokens: JsonInt | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: JsonInt | None = Field(None, ge=0, le=limits.MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Union[Literal["auto", "none", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: StrictBool | None = None
    modalities: list[str] | None = None  # Azure AI Inference
    num_crops: StrictInt | None = Field(None, ge=1, le=64)  # slmkit: crops per image on a vision model

    @property
    def token_limit(self) -> tuple[int | None, str]:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"

    def to_messages(self) -> list[Message]:
        return [m.to_message(i) for i, m in enumerate(self.messages)]

    def check_supported(self) -> None:
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidParameterError("top_logprobs", "needs logprobs: true")

    def params(self, defaults: SamplingParams) -> SamplingParams:
        limit, _ = self.token_limit
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        changes: dict[str, Any] = self.response_format.changes() if self.response_format else {}
        if self.tools:
            changes.update(tools=self.tools, tool_choice=tool_choice_name(self.tool_choice),
                           parallel_tool_calls=self.parallel_tool_calls is not False)
        elif self.tool_choice not in (None, "none", "auto"):
            raise InvalidParameterError("tool_choice", "needs tools")
        return self.sampling_params(defaults, max_tokens=limit, logprobs=logprobs).updated(**changes)


class CompletionRequest(_Sampling):
    prompt: Union[str, Annotated[list[str], Field(max_length=limits.MAX_PROMPTS)], list[JsonInt],
                  Annotated[list[list[JsonInt]], Field(max_length=limits.MAX_PROMPTS)]]
    max_tokens: JsonInt | None = Field(16, ge=1)
    logprobs: JsonInt | None = Field(None, ge=0, le=5)
    echo: StrictBool = False
    suffix: str | None = None
    best_of: JsonInt | None = None

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise InvalidParameterError("prompt", "must not be empty")
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)

    def check_supported(self) -> None:
        if self.suffix:
            raise InvalidParameterError("suffix", "fill-in-the-middle is not supported by this model server")
        if self.best_of not in (None, self.n):
            raise InvalidParameterError("best_of", "only best_of equal to n is supported")

    def params(self, defaults: SamplingParams) -> SamplingParams:
        return self.sampling_params(defaults, max_tokens=self.max_tokens, logprobs=self.logprobs)


class EmbeddingRequest(_Strict):
    model: str
    input: Union[str, Annotated[list[str], Field(max_length=limits.MAX_PROMPTS)], list[JsonInt],
                 Annotated[list[list[JsonInt]], Field(max_length=limits.MAX_PROMPTS)]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: JsonInt | None = Field(None, ge=1)
    user: str | None = None

    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input]
        if self.input and all(isinstance(x, str) for x in self.input):
            return list(self.input)
        if not self.input:
            raise InvalidParameterError("input", "must not be empty")
        raise InvalidParameterError("input", "token-id input is not supported; send text")
