"""OpenAI-shaped APIs: ``POST /chat/completions`` and ``/completions``, streamed as SSE.

The base of the GitHub Models, Azure AI Inference and NVIDIA NIM providers, and itself the
``openai:`` provider for api.openai.com or any OpenAI-compatible server (vLLM, llama-server,
LM Studio, another ``slm serve``) at ``OPENAI_BASE_URL``.

Sampling parameters the OpenAI API lacks (``top_k``, ``min_p``, ``repetition_penalty``,
``stop_token_ids``, ``ignore_eos``) are refused for api.openai.com and the clouds. For any other
base URL they are sent as vLLM's extra body fields, which vLLM, llama-server and slmkit accept;
a server that does not know them answers 400, which is raised, never hidden. Messages with
content parts (text and ``image_url``) are sent as they are.
"""

from __future__ import annotations

import json
from typing import Any, Iterable
from urllib.parse import urlsplit

from slmkit.errors import InvalidParameterError, MissingCredentialError, ProviderConfigError, ProviderError
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
    wire_tool_choice,
)
from slmkit.providers.http import ErrorHints, HttpCall, HttpTransport, upstream_message
from slmkit.text.tool_calls import new_call_id
from slmkit.types import RequestOutput, ToolCall, Usage

OPENAI_BASE_URL = "https://api.openai.com/v1"

NOT_IN_OPENAI_API = {
    "top_k": "the OpenAI-style API has no top_k; use top_p",
    "min_p": "the OpenAI-style API has no min_p; use top_p",
    "repetition_penalty": "the OpenAI-style API has no repetition_penalty; use frequency_penalty or "
                          "presence_penalty",
    "stop_token_ids": "the OpenAI-style API takes stop strings, not token ids; use stop",
    "ignore_eos": "the OpenAI-style API has no ignore_eos",
}
# Sent as top-level fields to OpenAI-compatible servers other than api.openai.com.
VLLM_EXTRAS = ("top_k", "min_p", "repetition_penalty", "stop_token_ids", "ignore_eos")


class OpenAICompatProvider(HttpProvider):
    """Chat and completions over an OpenAI-shaped API. Subclasses adjust the URL, headers,
    model ids and the parameters their API lacks."""

    name = "openai"
    credential_variable: str | None = "OPENAI_API_KEY"
    base_url_variable: str | None = "OPENAI_BASE_URL"
    chat_path = "/chat/completions"
    completions_path: str | None = "/completions"
    send_stream_options = True  # ask for the usage chunk at the end of the stream
    max_stop: int | None = 4
    auth_help = ""

    def __init__(self, *, base_url: str, api_key: str | None = None, transport: HttpTransport | None = None):
        super().__init__(transport=transport)
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            where = f" (from {self.base_url_variable} or providers.toml)" if self.base_url_variable else ""
            raise ProviderConfigError(f"the {self.name} provider's base URL {base_url!r}{where} must be a full "
                                      "http:// or https:// URL, e.g. http://127.0.0.1:8000/v1")
        self._base_url = base_url.strip().rstrip("/")
        self.api_key = api_key or None

    @property
    def base_url(self) -> str:
        return self._base_url

    # -- what differs between OpenAI-shaped APIs ------------------------------------------
    def unsupported(self) -> dict[str, str]:
        """SamplingParams fields this API cannot honour -> why."""
        return {**WHY_NOT_OVER_HTTP, **NOT_IN_OPENAI_API}

    def sends_vllm_extras(self) -> bool:
        return False

    def wire_model(self, model: str) -> str:
        return model

    def headers(self, request: ProviderRequest) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def url(self, path: str) -> str:
        return join_url(self.base_url, path)

    def not_found_help(self) -> str:
        return ""

    # -- the call -----------------------------------------------------------------------
    def build_call(self, request: ProviderRequest) -> HttpCall:
        refuse_unsupported(self.name, request.params, self.unsupported())
        if request.is_chat:
            path = self.chat_path
        elif self.completions_path is None:
            raise InvalidParameterError(
                "prompt", f"the {self.name} provider has no text-completion API; send chat messages instead")
        else:
            path = self.completions_path
        model = self.wire_model(request.model)
        hints = ErrorHints(provider=self.name, model=model, base_url=self.base_url,
                           credential_variable=self.credential_variable, base_url_variable=self.base_url_variable,
                           auth_help=self.auth_help, not_found_help=self.not_found_help())
        return HttpCall(url=self.url(path), body=self.body(request, model), hints=hints,
                        headers=self.headers(request))

    def body(self, request: ProviderRequest, model: str) -> dict[str, Any]:
        p = request.params
        body: dict[str, Any] = {"model": model} if model else {}
        if request.is_chat:
            body["messages"] = [m.to_dict() for m in request.messages or []]
        else:
            body["prompt"] = request.prompt
        body["stream"] = True
        if self.send_stream_options:
            body["stream_options"] = {"include_usage": True}
        body["temperature"] = p.temperature
        body["top_p"] = p.top_p
        if p.max_tokens is not None:
            body["max_tokens"] = p.max_tokens
        elif not request.is_chat:
            body["max_tokens"] = None  # /completions defaults to 16; null asks for no limit
        if p.stop:
            if self.max_stop is not None and len(p.stop) > self.max_stop:
                raise InvalidParameterError(
                    "stop", f"the {self.name} provider takes at most {self.max_stop} stop strings, got {len(p.stop)}")
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if p.frequency_penalty:
            body["frequency_penalty"] = p.frequency_penalty
        if p.presence_penalty:
            body["presence_penalty"] = p.presence_penalty
        if p.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in p.logit_bias.items()}
        if p.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif p.json_schema is not None:
            strict = not (isinstance(p.json_schema, dict) and (p.json_schema.get("x-guidance") or {}).get("lenient"))
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": wire_schema(p.json_schema), "strict": strict}}
        if p.tools:
            body["tools"] = [t.to_dict() for t in p.tools]
            body["tool_choice"] = wire_tool_choice(p)
            if not p.parallel_tool_calls:
                body["parallel_tool_calls"] = False
        if self.sends_vllm_extras():
            if p.top_k:
                body["top_k"] = p.top_k
            if p.min_p:
                body["min_p"] = p.min_p
            if p.repetition_penalty != 1.0:
                body["repetition_penalty"] = p.repetition_penalty
            if p.stop_token_ids:
                body["stop_token_ids"] = list(p.stop_token_ids)
            if p.ignore_eos:
                body["ignore_eos"] = True
        body.update(request.extra_body)
        return body

    def new_parser(self, request: ProviderRequest, builder: OutputBuilder) -> StreamParser:
        return SseParser(self.name, builder, chat=request.is_chat)


class SseParser(StreamParser):
    """Server-sent events of ``chat.completion.chunk`` / ``text_completion`` objects, ending with
    ``data: [DONE]``; an ``{"error": ...}`` event (vLLM, slmkit) is raised."""

    def __init__(self, provider: str, builder: OutputBuilder, *, chat: bool):
        super().__init__(provider, builder)
        self.chat = chat
        self._data: list[str] = []

    def feed(self, line: str) -> Iterable[RequestOutput]:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return []  # a comment, e.g. a keep-alive
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return []

    def flush(self) -> Iterable[RequestOutput]:
        return self._dispatch()  # a last event without its blank line

    def _dispatch(self) -> list[RequestOutput]:
        if not self._data:
            return []
        data, self._data = "\n".join(self._data), []
        if data.strip() == "[DONE]":
            self.done = True
            return []
        chunk = self.decode_chunk(data, "event")
        if chunk.get("error") is not None:
            message, param = upstream_message(json.dumps(chunk))
            raise ProviderError(f"{self.provider} failed in the middle of the answer: {message}",
                                provider=self.provider, param=param, code="provider_stream_error")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details") or {}
            self.usage = Usage(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                               completion_tokens=int(usage.get("completion_tokens") or 0),
                               cached_tokens=int(details.get("cached_tokens") or 0))
        outputs: list[RequestOutput] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            if self.chat:
                delta = choice.get("delta") or {}
                text = delta.get("content")
                self._add_tool_calls(delta.get("tool_calls") or [])
            else:
                text = choice.get("text")
            outputs += self.builder.delta(text)
            if choice.get("finish_reason"):
                self.finish = finish_reason(choice["finish_reason"])
        return outputs


    def _add_tool_calls(self, deltas: list[dict]) -> None:
        """OpenAI's call deltas: the first of an index brings id and name, the rest add arguments."""
        for delta in deltas:
            index = delta.get("index", len(self.tool_calls))
            function = delta.get("function") or {}
            while len(self.tool_calls) <= index:
                self.tool_calls.append(ToolCall("", "", ""))
            call = self.tool_calls[index]
            call.id = delta.get("id") or call.id or new_call_id()
            call.name = function.get("name") or call.name
            call.arguments += function.get("arguments") or ""


class OpenAIProvider(OpenAICompatProvider):
    """api.openai.com, or any OpenAI-compatible server at ``OPENAI_BASE_URL``."""

    name = "openai"

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None,
                 transport: HttpTransport | None = None):
        super().__init__(base_url=base_url or OPENAI_BASE_URL, api_key=api_key, transport=transport)
        if self.is_openai_cloud and not self.api_key:
            raise MissingCredentialError(
                "openai", "OPENAI_API_KEY",
                "the openai provider needs an API key for api.openai.com: set OPENAI_API_KEY (or api_key under "
                "[openai] in providers.toml), or set OPENAI_BASE_URL to an OpenAI-compatible server such as "
                "vLLM, llama-server, LM Studio or `slm serve` (http://host:port/v1)")
        self.max_stop = 4 if self.is_openai_cloud else None

    @property
    def is_openai_cloud(self) -> bool:
        return urlsplit(self.base_url).hostname == "api.openai.com"

    def unsupported(self) -> dict[str, str]:
        if self.is_openai_cloud:
            return super().unsupported()
        return dict(WHY_NOT_OVER_HTTP)

    def sends_vllm_extras(self) -> bool:
        return not self.is_openai_cloud
