"""Typed values that cross slmkit's layers: sampling parameters, outputs, usage. The chat message
types live in `slmkit.messages`; they are importable from here too, as they always were."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Literal, Sequence

import numpy as np

from slmkit import limits
from slmkit.errors import InvalidParameterError
from slmkit.messages import (  # noqa: F401 - re-exported: `from slmkit.types import Message` stays valid
    ContentPart, ImagePart, Message, TextPart, ToolCall, image_media_type, refuse_images)
from slmkit.structure import Structure, Tool

LogitsProcessor = Callable[[Sequence[int], np.ndarray], np.ndarray]
"""A user scoring hook: ``fn(token_ids, logits) -> logits``.

``token_ids`` is the whole sequence so far (prompt and generated tokens); ``logits`` is one row of
``vocab_size`` floats that the function may modify in place and must return.
"""

FinishReason = Literal["stop", "length", "abort", "tool_calls"]


@dataclass
class SamplingParams:
    """How to pick tokens: the knobs of vLLM / OpenAI / llama.cpp under their usual names.

    Penalties follow the OpenAI / vLLM semantics: ``frequency_penalty`` and ``presence_penalty``
    count generated tokens only; ``repetition_penalty`` (CTRL-style, divides positive logits)
    covers prompt and generated tokens. ``temperature=0`` means greedy.

    Output structure (enforced token by token, see `slmkit.structure`): ``response_format=
    "json_object"``, a ``json_schema``, a ``regex``, or a Lark / GBNF ``grammar`` (one of them);
    or ``tools`` with ``tool_choice`` (``auto``, ``none``, ``required`` or a tool's name).
    """

    max_tokens: int | None = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logit_bias: dict[int, float] = field(default_factory=dict)
    logits_processors: list[LogitsProcessor] = field(default_factory=list)
    num_beams: int = 1
    length_penalty: float = 1.0
    logprobs: int | None = None  # None: none; k >= 0: the sampled token's logprob and the k best
    response_format: Literal["text", "json_object"] = "text"
    # draft tokens by prompt lookup or a draft model (which the engine must have); None: the engine's default
    speculative: Literal["off", "ngram", "draft"] | None = None
    json_schema: dict[str, Any] | bool | None = None
    regex: str | None = None
    grammar: str | None = None  # Lark (llguidance's dialect), or GBNF (``root ::= ...``)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.json_schema, str):
            try:
                self.json_schema = json.loads(self.json_schema)
            except ValueError as exc:
                raise InvalidParameterError("json_schema", f"is not valid JSON: {exc}") from None
        self.tools = [Tool.coerce(t, f"tools[{i}]") for i, t in enumerate(_as_list("tools", self.tools))]
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = _as_list("stop", self.stop)
        self.stop_token_ids = _as_list("stop_token_ids", self.stop_token_ids)
        self.logits_processors = _as_list("logits_processors", self.logits_processors)
        self.logit_bias = _as_logit_bias(self.logit_bias)
        if self.seed == limits.RANDOM_SEED:
            self.seed = None  # llama.cpp's and Ollama's -1: a fresh random seed
        self.validate()

    def validate(self) -> None:
        """Raise `InvalidParameterError` naming the first field with a bad value."""
        _check_int("max_tokens", self.max_tokens, minimum=1, maximum=limits.MAX_TOKENS_LIMIT, optional=True)
        _check_number("temperature", self.temperature, minimum=0.0, maximum=limits.TEMPERATURE_MAX)
        _check_int("top_k", self.top_k, minimum=0)
        _check_number("top_p", self.top_p, minimum=0.0, maximum=1.0, exclusive_min=True)
        _check_number("min_p", self.min_p, minimum=0.0, maximum=1.0)
        _check_number("repetition_penalty", self.repetition_penalty, minimum=0.0, exclusive_min=True)
        _check_number("frequency_penalty", self.frequency_penalty, minimum=-limits.PENALTY_RANGE,
                      maximum=limits.PENALTY_RANGE)
        _check_number("presence_penalty", self.presence_penalty, minimum=-limits.PENALTY_RANGE,
                      maximum=limits.PENALTY_RANGE)
        _check_int("seed", self.seed, minimum=0, maximum=limits.SEED_MAX, optional=True,
                   hint="or -1 / None for a random seed")
        _check_int("num_beams", self.num_beams, minimum=1, maximum=limits.MAX_BEAMS)
        _check_number("length_penalty", self.length_penalty, minimum=None)
        _check_int("logprobs", self.logprobs, minimum=0, maximum=limits.MAX_TOP_LOGPROBS, optional=True)
        _check_bool("ignore_eos", self.ignore_eos)
        if self.speculative is not None and self.speculative not in limits.SPECULATIVE_MODES:
            raise InvalidParameterError("speculative", f"must be one of {', '.join(limits.SPECULATIVE_MODES)} "
                                        f"(or None for the engine's default), got {self.speculative!r}")
        if self.response_format not in ("text", "json_object"):
            raise InvalidParameterError("response_format", "must be 'text' or 'json_object'")
        _check_bool("parallel_tool_calls", self.parallel_tool_calls)
        self.structure.check()
        if len(self.stop) > limits.MAX_STOP_STRINGS:
            raise InvalidParameterError("stop", f"at most {limits.MAX_STOP_STRINGS} stop strings, got {len(self.stop)}")
        for i, stop in enumerate(self.stop):
            if not isinstance(stop, str) or stop == "":
                raise InvalidParameterError(f"stop[{i}]", "must be a non-empty string")
            if len(stop) > limits.MAX_STOP_LENGTH:
                raise InvalidParameterError(f"stop[{i}]", f"at most {limits.MAX_STOP_LENGTH} characters, "
                                            f"got {len(stop)}")
        if len(self.stop_token_ids) > limits.MAX_STOP_TOKEN_IDS:
            raise InvalidParameterError("stop_token_ids", f"at most {limits.MAX_STOP_TOKEN_IDS} ids, "
                                        f"got {len(self.stop_token_ids)}")
        for i, token_id in enumerate(self.stop_token_ids):
            _check_int(f"stop_token_ids[{i}]", token_id, minimum=0)
        if len(self.logit_bias) > limits.MAX_LOGIT_BIAS_ENTRIES:
            raise InvalidParameterError("logit_bias", f"at most {limits.MAX_LOGIT_BIAS_ENTRIES} entries, "
                                        f"got {len(self.logit_bias)}")
        for token_id, bias in self.logit_bias.items():
            if token_id < 0:
                raise InvalidParameterError("logit_bias", f"token id {token_id} is negative")
            if math.isnan(bias):
                raise InvalidParameterError("logit_bias", f"bias for token {token_id} is NaN")
        for i, processor in enumerate(self.logits_processors):
            if not callable(processor):
                raise InvalidParameterError(f"logits_processors[{i}]", "must be callable")
        if self.num_beams > 1 and self.structure.grammar_text() is not None:
            raise InvalidParameterError("num_beams", "beam search cannot follow an output format (JSON, regex, grammar "
                                        "or tool calls); use num_beams=1")
        if self.num_beams > 1 and self.temperature not in (0, 0.0, 1.0):
            raise InvalidParameterError(
                "num_beams", "beam search scores by log-probability; leave temperature at 0 or 1"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def structure(self) -> Structure:
        """What the output's shape must be (`Structure.grammar_text` is None when it is free)."""
        return Structure(self.response_format, self.json_schema, self.regex, self.grammar, tuple(self.tools),
                         self.tool_choice, self.parallel_tool_calls)

    def end_token_ids(self, end_of_generation: frozenset[int] | set[int]) -> set[int]:
        """Tokens that end generation: ``stop_token_ids``, plus the model's end-of-turn tokens
        unless ``ignore_eos``."""
        return set(self.stop_token_ids) | (set() if self.ignore_eos else set(end_of_generation))

    def updated(self, **changes: Any) -> "SamplingParams":
        """A copy with `changes` applied (unknown names are an error, values re-validated)."""
        known = {f.name for f in fields(self)}
        for name in changes:
            if name not in known:
                raise InvalidParameterError(name, f"unknown sampling parameter; known: {sorted(known)}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return SamplingParams(**values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SamplingParams":
        return cls().updated(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (no callables): what a manifest or a log line stores."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "logits_processors"}
        values["tools"] = [t.to_dict() for t in self.tools]
        return values


def _check_number(name, value, *, minimum, maximum=None, exclusive_min=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParameterError(name, f"must be a number, got {_short(value)}")
    if math.isnan(value) or math.isinf(value):
        raise InvalidParameterError(name, f"must be finite, got {value!r}")
    if minimum is not None:
        if exclusive_min and value <= minimum:
            raise InvalidParameterError(name, f"must be > {minimum}, got {value!r}")
        if not exclusive_min and value < minimum:
            raise InvalidParameterError(name, f"must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidParameterError(name, f"must be <= {maximum}, got {value!r}")


def _check_int(name, value, *, minimum, maximum=None, optional=False, hint="") -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidParameterError(name, f"must be an integer, got {_short(value)}")
    hint = f" ({hint})" if hint else ""
    if minimum is not None and value < minimum:
        raise InvalidParameterError(name, f"must be >= {minimum}{hint}, got {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidParameterError(name, f"must be <= {maximum}{hint}, got {value!r}")


def _check_bool(name, value) -> None:
    if not isinstance(value, bool):
        raise InvalidParameterError(name, f"must be true or false, got {_short(value)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_list(name: str, value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise InvalidParameterError(name, f"must be a list, got {_short(value)}")
    return list(value)


def _as_logit_bias(value) -> dict[int, float]:
    """``{token_id: bias}`` from any mapping of numbers (JSON gives string keys)."""
    if value is None:
        return {}
    try:
        items = dict(value).items()
    except (TypeError, ValueError):
        raise InvalidParameterError("logit_bias", f"must map token ids to numbers, got {_short(value)}") from None
    bias = {}
    for key, val in items:
        try:
            token_id = int(key)
            number = float(val)
        except (TypeError, ValueError, OverflowError):
            raise InvalidParameterError("logit_bias", f"must map token ids to numbers, got {_short(key)}: "
                                        f"{_short(val)}") from None
        if isinstance(key, float) and key != token_id:
            raise InvalidParameterError("logit_bias", f"token ids are integers, got {key!r}")
        bias[token_id] = number
    return bias


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timings:
    """Wall-clock figures of one request, in seconds (what ``--verbose`` prints)."""

    prefill_seconds: float = 0.0  # prompt processing, up to the first sampled token
    decode_seconds: float = 0.0  # from the first to the last sampled token
    time_to_first_token: float = 0.0
    drafted_tokens: int = 0  # speculation: tokens guessed and verified
    accepted_tokens: int = 0  # of them, kept
    draft_seconds: float = 0.0  # in the draft model (draft-model speculation), part of decode_seconds


@dataclass
class TokenLogprob:
    """The log-probability of a sampled token under the model (before sampling processors),
    with the ``top`` most likely alternatives as ``[(token_id, logprob)]``, best first."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class RequestOutput:
    """A result, or one streamed delta of it.

    While streaming, ``text`` and ``token_ids`` hold what is new in this delta and
    ``finish_reason`` is None until the last one. A non-streaming call returns one
    `RequestOutput` with the whole text.
    """

    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    request_id: str = ""
    index: int = 0  # which of several completions (beams, n > 1)
    logprobs: list[TokenLogprob] | None = None  # one per token in token_ids, if asked for
    stop_sequence: str | None = None  # on the last delta: the stop string that ended it, if one did
    error: Exception | None = None  # set on the last output when the engine failed the request
    tool_calls: list[ToolCall] = field(default_factory=list)  # on a whole result: the calls parsed from text

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
