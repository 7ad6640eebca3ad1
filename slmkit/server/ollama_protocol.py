"""Ollama's shapes (ollama/ollama ``api/types.go``): request bodies converted once into our types,
and the model descriptions ``/api/tags``, ``/api/show`` and ``/api/ps`` answer with.

Like Ollama (Go's JSON decoding), unknown top-level fields and unknown ``options`` keys are
ignored, but a known field of the wrong type is a 400. Options Ollama has and slmkit cannot use
(``num_ctx``, ``num_gpu``, ``mirostat``, ...) are type-checked and ignored: the server fixes the
context and threads when it starts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
import struct
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from slmkit.backends.llamacpp import LlamaCppModel, ModelInfo
from slmkit.errors import InvalidParameterError
from slmkit.server.protocol import JsonInt
from slmkit.store.gguf_info import format_parameters
from slmkit.store.manifest import Manifest
from slmkit.store.modelfile import (
    BOOL_OPTIONS,
    FLOAT_OPTIONS,
    INT_OPTIONS,
    OPTION_OF_FIELD,
    SAMPLING_FIELDS,
    ollama_parameters,
)
from slmkit.store.modelfile import render as render_modelfile
from slmkit.structure import Tool
from slmkit.types import ImagePart, Message, SamplingParams, TextPart, ToolCall, image_media_type

log = logging.getLogger("slmkit.server")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any, default: float) -> float:
    """Seconds a model stays loaded after a request, from Ollama's ``keep_alive``: a Go duration
    (``"5m"``, ``"1h30m"``, ``"0"``) or a number of seconds; negative means forever (-1 here)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidParameterError("keep_alive", f"must be a duration like \"5m\" or a number of seconds, "
                                    f"got {_json(value)}")
    if isinstance(value, (int, float)):
        return -1.0 if value < 0 else float(int(value))  # Ollama truncates to whole seconds
    seconds = _parse_go_duration(value.strip())
    if seconds is None:
        raise InvalidParameterError(
            "keep_alive", f"invalid duration {_json(value)}; use e.g. \"30s\", \"5m\", \"1h\", 0 to unload after "
            "the request, or -1 to keep the model loaded")
    return -1.0 if seconds < 0 else seconds


def _parse_go_duration(text: str) -> float | None:
    """Go's time.ParseDuration: ``[-+]`` then number+unit pairs; a bare ``0`` is allowed."""
    sign = 1.0
    if text and text[0] in "+-":
        sign, text = (-1.0 if text[0] == "-" else 1.0), text[1:]
    if text == "0":
        return 0.0
    if not text:
        return None
    total, pos = 0.0, 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def timestamp(seconds: float | None = None, *, ns: int | None = None) -> str:
    """RFC 3339 in UTC with nanoseconds, as Go prints Ollama's ``created_at`` and ``modified_at``."""
    if ns is None:
        ns = time.time_ns() if seconds is None else int(seconds * 1e9)
    whole, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{frac:09d}Z"


def nanoseconds(seconds: float) -> int:
    return max(0, int(round(seconds * 1e9)))


def strip_latest(model: str) -> str:
    """``name:latest`` is what Ollama tools call a default tag; the store calls it ``name``."""
    return model[: -len(":latest")] if model.endswith(":latest") else model


# -- options ------------------------------------------------------------------------------
def check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Type-check Ollama options like api.Options.FromMap; returns the ones slmkit honours."""
    honoured: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if value is None:
            continue
        where = f"options.{key}"
        if key in INT_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidParameterError(where, f"must be an integer, got {_json(value)}")
            value = int(value)  # Go decodes JSON numbers as float64 and truncates them
        elif key in FLOAT_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidParameterError(where, f"must be a number, got {_json(value)}")
            value = float(value)
        elif key in BOOL_OPTIONS:
            if not isinstance(value, bool):
                raise InvalidParameterError(where, f"must be true or false, got {_json(value)}")
        elif key == "stop":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise InvalidParameterError(where, f"must be an array of strings, got {_json(value)}")
        else:
            log.warning("ignoring unknown Ollama option %r", key)
            continue
        if key in SAMPLING_FIELDS:
            honoured[key] = value
    return honoured


def sampling_params(options: dict[str, Any] | None, defaults: SamplingParams, *,
                    default_max_tokens: int | None, structure: dict[str, Any],
                    logprobs: int | None) -> tuple[SamplingParams, int | None]:
    """The request's SamplingParams (options over the model's defaults) and the ``num_predict``
    the caller gave (None when not given), which the context check names."""
    honoured = check_options(options)
    changes: dict[str, Any] = {"max_tokens": default_max_tokens, "logprobs": logprobs}
    asked_max: int | None = None
    for key, value in honoured.items():
        if key == "num_predict":  # -1: until the end of generation, -2: fill the context
            asked_max = value if value > 0 else None
            value = asked_max
        elif key == "seed" and value < 0:  # -1: a random seed
            value = None
        elif key == "top_k":
            value = max(0, value)
        changes[SAMPLING_FIELDS[key]] = value
    try:
        params = defaults.updated(**changes)
    except InvalidParameterError as exc:
        detail = exc.message[len(exc.param) + 2:] if exc.param else exc.message
        option = OPTION_OF_FIELD.get(exc.param or "", exc.param)
        raise InvalidParameterError(f"options.{option}", detail) from None
    return params.updated(**structure), asked_max


def output_format(fmt: Any) -> dict[str, Any]:
    """``format``: "" or null for text, "json" for any JSON object, or a JSON Schema object; as
    `SamplingParams` changes."""
    if fmt is None or fmt == "":
        return {}
    if fmt == "json":
        return {"response_format": "json_object"}
    if isinstance(fmt, dict):
        return {"json_schema": fmt}
    raise InvalidParameterError("format", f"must be \"json\" or a JSON schema object, got {_json(fmt)}")


def _json(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# -- request bodies -----------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GenerationRequest(_Body):
    model: StrictStr = ""
    format: Any = None
    options: dict[str, Any] | None = None
    stream: Any = None  # checked by hand: http.parse_model would name the field "body"
    keep_alive: Any = None
    think: Any = None  # no thinking models here; accepted and ignored
    logprobs: StrictBool | None = None
    top_logprobs: JsonInt | None = Field(None, ge=0, le=20)

    @property
    def streaming(self) -> bool:
        return self.stream is not False

    def logprobs_k(self) -> int | None:
        if self.top_logprobs and not self.logprobs:
            raise InvalidParameterError("top_logprobs", "needs logprobs: true")
        return (self.top_logprobs or 0) if self.logprobs else None

    def check_common(self) -> None:
        require_model(self.model)
        check_stream(self.stream)
        output_format(self.format)


class ChatMessage(_Body):
    role: StrictStr
    content: StrictStr | None = None
    images: list[StrictStr] | None = None
    tool_calls: list[Any] | None = None
    tool_name: StrictStr | None = None
    thinking: StrictStr | None = None


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage] | None = None
    tools: list[Any] | None = None

    def check_supported(self) -> None:
        self.check_common()
        self.tool_list()

    def tool_list(self) -> list[Tool]:
        return [Tool.coerce(t, f"tools[{i}]") for i, t in enumerate(self.tools or [])]

    def structure(self) -> dict[str, Any]:
        """Output-format and tool changes for `SamplingParams` (Ollama has no tool_choice: auto)."""
        changes = output_format(self.format)
        if self.tools:
            changes.update(tools=self.tool_list(), tool_choice="auto")
        return changes

    def to_messages(self) -> list[Message]:
        """Our messages; ``images`` become image parts after the text (a text-only model refuses
        them when its chat template is applied); tool calls and results keep their links."""
        messages = []
        for i, m in enumerate(self.messages or []):
            message = _message(m.role, m.content or "", m.images, f"messages[{i}].images")
            if m.tool_calls:
                message.tool_calls = [ToolCall.coerce(c, f"messages[{i}].tool_calls[{k}]")
                                      for k, c in enumerate(m.tool_calls)]
            if m.role == "tool" and m.tool_name:
                message.tool_call_id = m.tool_name
            messages.append(message)
        return messages


class GenerateRequest(GenerationRequest):
    prompt: StrictStr | None = None
    suffix: StrictStr | None = None
    system: StrictStr | None = None
    template: StrictStr | None = None
    context: list[JsonInt] | None = None
    raw: StrictBool = False
    images: list[StrictStr] | None = None

    def check_supported(self) -> None:
        self.check_common()
        if self.template:
            raise InvalidParameterError("template", "a per-request prompt template is not supported; the model's "
                                        "chat template is used — send \"raw\": true with a fully formatted "
                                        "prompt instead")
        if self.suffix:
            raise InvalidParameterError("suffix", "fill-in-the-middle is not supported by this server")
        if self.raw and self.images:
            raise InvalidParameterError("images", "images go through the model's chat template; leave \"raw\" "
                                        "false to send them")

    def structure(self) -> dict[str, Any]:
        return output_format(self.format)

    def to_messages(self) -> list[Message]:
        """The prompt as a chat turn (system first when given), what a non-raw generate runs."""
        system = [Message("system", self.system)] if self.system else []
        return system + [_message("user", self.prompt or "", self.images, "images")]


def _message(role: str, text: str, images: list[str] | None, where: str) -> Message:
    if not images:
        return Message(role, text)
    return Message(role, [TextPart(text), *(image_part(data, f"{where}[{i}]") for i, data in enumerate(images))])


def image_part(data: str, where: str) -> ImagePart:
    """An Ollama image (bare base64, as its API takes them) as a data-URL image part."""
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise InvalidParameterError(where, "must be base64-encoded image data (without a data: prefix)") from None
    media_type = image_media_type(raw)
    if media_type is None:
        raise InvalidParameterError(where, "is not a PNG, JPEG, GIF, WebP or BMP image")
    return ImagePart(f"data:{media_type};base64,{data}")


class EmbedRequest(_Body):
    model: StrictStr = ""
    input: Union[StrictStr, list[StrictStr], None] = None
    truncate: StrictBool = True
    dimensions: JsonInt | None = Field(None, ge=1)
    options: dict[str, Any] | None = None
    keep_alive: Any = None

    def texts(self) -> list[str]:
        if self.input is None or self.input == "":
            return []
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingsRequest(_Body):
    """The legacy ``/api/embeddings``: one prompt, one vector."""

    model: StrictStr = ""
    prompt: StrictStr = ""
    options: dict[str, Any] | None = None
    keep_alive: Any = None


class ModelRequest(_Body):
    """``/api/show``, ``/api/pull`` and ``/api/push``; ``name`` is Ollama's deprecated spelling of ``model``."""

    model: StrictStr = ""
    name: StrictStr = ""
    verbose: StrictBool = False
    stream: Any = None  # as in GenerationRequest
    insecure: StrictBool = False

    def reference(self) -> str:
        """The model asked for, once the body is known to be sound."""
        check_stream(self.stream)
        return require_model(self.model or self.name)


def check_stream(stream: Any) -> None:
    if stream is not None and not isinstance(stream, bool):
        raise InvalidParameterError("stream", f"must be true or false, got {_json(stream)}")


def require_model(model: str) -> str:
    if not model.strip():
        raise InvalidParameterError("model", "is required (e.g. \"smollm2\"); GET /api/tags lists the models")
    return model.strip()


# -- model descriptions -------------------------------------------------------------------
def digest(path: Path) -> str:
    """A stable id for a model file: sha256 of its path, size and mtime. Ollama's digest hashes
    the bytes, which would take seconds per listing for a large GGUF; this one still changes
    whenever the file does."""
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()


@lru_cache(maxsize=64)
def read_model_info(path: str, size: int, mtime_ns: int) -> ModelInfo:
    """A GGUF's header through llama.cpp without its weights (~0.1 s); size and mtime key the cache.
    A Hugging Face or ONNX Runtime GenAI folder is described from its config and weight headers."""
    if Path(path).is_dir():
        from slmkit.store.gguf_info import read_summary

        summary = read_summary(path)
        return ModelInfo(path=Path(path), architecture=summary.architecture, description=summary.name,
                         parameters=summary.parameters, size_bytes=summary.size_bytes,
                         file_type=summary.file_type, context_length=summary.context_length or 0,
                         chat_template=summary.chat_template, metadata={})
    model = LlamaCppModel(path, vocab_only=True)
    try:
        return model.info
    finally:
        model.close()


def details(info: ModelInfo) -> dict:
    return {"parent_model": "", "format": "gguf", "family": info.architecture, "families": [info.architecture],
            "parameter_size": format_parameters(info.parameters), "quantization_level": info.file_type.upper()}


_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?|-?\d+[eE][-+]?\d+")
_TEXT_KEYS = re.compile(r"general\.(name|basename|finetune|size_label|license|organization|type|version)")


def gguf_model_info(info: ModelInfo) -> dict:
    """``model_info`` like Ollama's: the header's key/values (llama.cpp hands them over as text,
    so numbers and booleans are typed back), without the chat template and the token arrays."""
    facts: dict[str, Any] = {}
    for key, text in sorted(info.metadata.items()):
        if key == "tokenizer.chat_template":
            continue
        value: Any = text
        if not _TEXT_KEYS.fullmatch(key):
            if _INT.fullmatch(text):
                value = int(text)
            elif _FLOAT.fullmatch(text):
                value = float(text)
            elif text in ("true", "false"):
                value = text == "true"
        facts[key] = value
    facts["general.parameter_count"] = info.parameters
    return dict(sorted(facts.items()))


def modelfile(name: str, path: Path, manifest: Manifest, template: str) -> str:
    return render_modelfile(name, path, manifest, template, generator="/api/show")


def parameters_text(parameters: dict) -> str:
    return "\n".join(f"{option:<30} {value}" for option, value in ollama_parameters(parameters))


@dataclass(frozen=True)
class EmbeddingModel:
    path: Path
    size: int
    modified: float
    details: dict
    model_info: dict


@lru_cache(maxsize=1)
def minilm_facts() -> EmbeddingModel:
    """all-MiniLM-L6-v2's facts from its config.json and the safetensors header (no weights read)."""
    from slmkit.embeddings import locate_minilm

    folder = locate_minilm()
    weights = folder / "model.safetensors"
    with weights.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    by_dtype: dict[str, int] = {}
    for name, tensor in header.items():
        if name != "__metadata__" and tensor["dtype"].startswith(("F", "BF")):  # not the I64 position ids
            by_dtype[tensor["dtype"]] = by_dtype.get(tensor["dtype"], 0) + math.prod(tensor["shape"])
    parameters = sum(by_dtype.values())
    dtype = max(by_dtype, key=by_dtype.get, default="F32")
    config = json.loads((folder / "config.json").read_text())
    arch = config.get("model_type", "bert")
    config_keys = {"block_count": "num_hidden_layers", "context_length": "max_position_embeddings",
                   "embedding_length": "hidden_size", "feed_forward_length": "intermediate_size",
                   "attention.head_count": "num_attention_heads", "vocab_size": "vocab_size"}
    info = {"general.architecture": arch, "general.parameter_count": parameters,
            **{f"{arch}.{key}": config.get(name) for key, name in config_keys.items()}}
    stat = weights.stat()
    return EmbeddingModel(
        path=weights, size=stat.st_size, modified=stat.st_mtime,
        details={"parent_model": "", "format": "safetensors", "family": arch, "families": [arch],
                 "parameter_size": format_parameters(parameters), "quantization_level": dtype},
        model_info=info,
    )


def show_minilm() -> dict:
    minilm = minilm_facts()
    return {"license": "apache-2.0",
            "modelfile": f"# all-MiniLM-L6-v2 (sentence-transformers)\nFROM {minilm.path.parent}\n",
            "parameters": "", "template": "", "details": minilm.details, "model_info": minilm.model_info,
            "capabilities": ["embedding"], "modified_at": timestamp(minilm.modified)}
