"""Ollama: ``POST /api/chat`` and ``/api/generate``, streamed as NDJSON (ollama/ollama docs/api.md).

`SamplingParams` go into ``options`` under Ollama's names, all of them explicitly, because
Ollama's defaults differ from slmkit's (temperature 0.8, top_k 40, top_p 0.9). A raw prompt goes
to ``/api/generate`` with ``raw: true``, so Ollama applies no template. Errors are
``{"error": "..."}`` bodies, and a failure after streaming began is one more such line with the
status still 200. Images go as Ollama has them: bare base64 (no ``data:`` prefix) in the
message's ``images``.
"""

from __future__ import annotations

import json
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

from slmkit.errors import InvalidParameterError, ProviderError
from slmkit.providers.base import (
    WHY_NOT_OVER_HTTP,
    HttpProvider,
    OutputBuilder,
    ProviderRequest,
    StreamParser,
    finish_reason,
    join_url,
    refuse_unsupported,
    wire_schema,
)
from slmkit.providers.http import ErrorHints, HttpCall, HttpTransport
from slmkit.text.tool_calls import new_call_id
from slmkit.types import Message, RequestOutput, Timings, ToolCall, Usage

DEFAULT_HOST = "http://127.0.0.1:11434"

PHI_MODELS = ["phi3", "phi3:mini", "phi3:medium", "phi3.5"]

UNSUPPORTED = {
    **WHY_NOT_OVER_HTTP,
    "stop_token_ids": "Ollama takes stop strings, not token ids; use stop",
    "ignore_eos": "Ollama has no ignore_eos option",
    "logit_bias": "Ollama has no logit_bias option",
}


def normalize_host(value: str | None) -> str:
    """``OLLAMA_HOST`` as Ollama's envconfig reads it: scheme optional (http), host default
    127.0.0.1, port default 11434 — but 80 / 443 when a scheme is written out. ``0.0.0.0`` is where
    a server listens, not an address to connect to: it becomes 127.0.0.1."""
    value = (value or "").strip().rstrip("/")
    if not value:
        return DEFAULT_HOST
    explicit_scheme = "://" in value
    parts = urlsplit(value if explicit_scheme else f"http://{value}")
    try:
        port = parts.port
    except ValueError:
        raise InvalidParameterError("OLLAMA_HOST", f"invalid port in {value!r}") from None
    if port is None:
        port = 11434 if not explicit_scheme else (443 if parts.scheme == "https" else 80)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path.rstrip("/"), "", ""))


class OllamaProvider(HttpProvider):
    name = "ollama"

    def __init__(self, *, host: str | None = None, api_key: str | None = None,
                 transport: HttpTransport | None = None):
        super().__init__(transport=transport)
        self._base_url = normalize_host(host)
        self.api_key = api_key or None

    @property
    def base_url(self) -> str:
        return self._base_url

    def known_models(self) -> list[str]:
        return list(PHI_MODELS)

    def build_call(self, request: ProviderRequest) -> HttpCall:
        refuse_unsupported(self.name, request.params, UNSUPPORTED)
        body: dict[str, Any] = {"model": request.model}
        if request.is_chat:
            path = "/api/chat"
            body["messages"] = [ollama_message(m, i) for i, m in enumerate(request.messages or [])]
        else:
            path = "/api/generate"
            body["prompt"] = request.prompt
            body["raw"] = True
        body["stream"] = True
        body["options"] = options(request)
        if request.params.response_format == "json_object":
            body["format"] = "json"
        elif request.params.json_schema is not None:
            body["format"] = wire_schema(request.params.json_schema)
        if request.params.tools and request.params.tool_choice != "none":
            if request.params.tool_choice != "auto":
                raise InvalidParameterError("tool_choice", "Ollama decides itself whether to call a tool: use 'auto'")
            body["tools"] = [t.to_dict() for t in request.params.tools]
        extra = dict(request.extra_body)
        if isinstance(extra.get("options"), dict):  # more options (num_ctx, ...) join ours
            body["options"].update(extra.pop("options"))
        body.update(extra)
        headers = {"Accept": "application/x-ndjson"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        hints = ErrorHints(provider=self.name, model=request.model, base_url=self.base_url,
                           credential_variable="OLLAMA_API_KEY" if self.api_key else None,
                           base_url_variable="OLLAMA_HOST",
                           not_found_help=f"run `ollama pull {request.model}` on the Ollama host")
        return HttpCall(url=join_url(self.base_url, path), body=body, hints=hints, headers=headers)

    def new_parser(self, request: ProviderRequest, builder: OutputBuilder) -> StreamParser:
        return NdjsonParser(self.name, builder, chat=request.is_chat)


def ollama_message(message: Message, index: int) -> dict[str, Any]:
    """Ollama's message: the text as ``content`` and images as bare base64 in ``images``."""
    wire: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.tool_calls:
        wire["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments_dict()}}
                              for c in message.tool_calls]
    if message.images:
        for image in message.images:
            if not image.is_data_url:
                raise InvalidParameterError(
                    f"messages[{index}]", f"Ollama takes images as base64 data, not URLs ({image.url[:60]!r}); "
                    "download the image and pass ImagePart.from_file(path), or a data: URL")
        wire["images"] = [image.base64_data for image in message.images]
    return wire


def options(request: ProviderRequest) -> dict[str, Any]:
    p = request.params
    opts: dict[str, Any] = {
        "temperature": p.temperature, "top_k": p.top_k, "top_p": p.top_p, "min_p": p.min_p,
        "repeat_penalty": p.repetition_penalty, "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty,
    }
    if p.repetition_penalty != 1.0:
        opts["repeat_last_n"] = -1  # slmkit's penalty covers the whole context, not Ollama's last 64
    if p.max_tokens is not None:
        opts["num_predict"] = p.max_tokens
    if p.seed is not None:
        opts["seed"] = p.seed
    if p.stop:
        opts["stop"] = list(p.stop)
    return opts


class NdjsonParser(StreamParser):
    def __init__(self, provider: str, builder: OutputBuilder, *, chat: bool):
        super().__init__(provider, builder)
        self.chat = chat

    def feed(self, line: str) -> Iterable[RequestOutput]:
        if not line.strip():
            return []
        chunk = self.decode_chunk(line, "line")
        if chunk.get("error") is not None:
            raise ProviderError(f"{self.provider} failed in the middle of the answer: {chunk['error']}",
                                provider=self.provider, code="provider_stream_error")
        message = chunk.get("message") or {}
        text = message.get("content") if self.chat else chunk.get("response")
        for call in message.get("tool_calls") or []:  # Ollama sends each call whole
            function = call.get("function") or {}
            arguments = function.get("arguments", {})
            self.tool_calls.append(ToolCall(call.get("id") or new_call_id(), str(function.get("name", "")),
                                            arguments if isinstance(arguments, str) else json.dumps(arguments)))
        outputs = self.builder.delta(text)
        if chunk.get("done"):
            self.done = True
            self.finish = finish_reason(chunk.get("done_reason"))
            self.usage = Usage(prompt_tokens=int(chunk.get("prompt_eval_count") or 0),
                               completion_tokens=int(chunk.get("eval_count") or 0))
            self.timings = Timings(prefill_seconds=(chunk.get("prompt_eval_duration") or 0) / 1e9,
                                   decode_seconds=(chunk.get("eval_duration") or 0) / 1e9)
        return outputs
