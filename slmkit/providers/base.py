"""What every provider is: an engine over HTTP with the local engine's interface.

A request goes in (`ProviderRequest`: messages or a prompt, and `SamplingParams`);
`RequestOutput` deltas come out, the last one with ``finish_reason``, usage and timings.
Closing the iterator early (or `abort`) closes the HTTP response, which is how a remote server
learns the caller has gone.

Remote APIs speak text, not token ids: ``token_ids`` of every output is empty.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, AsyncIterator, Iterable, Iterator, Protocol, runtime_checkable

from slmkit.errors import InvalidParameterError, ProviderError
from slmkit.providers.http import HttpCall, HttpTransport, shared_transport
from slmkit.types import Message, RequestOutput, SamplingParams, Timings, ToolCall, Usage


@dataclass
class ProviderRequest:
    """One generation request to a provider.

    ``messages`` for chat, or ``prompt`` for a raw completion (providers without a completions
    API refuse it). ``extra_body`` holds fields sent as they are, for what `SamplingParams` has
    no name for; they override fields slmkit would send.
    """

    model: str  # the provider's own model id ("Phi-3.5-mini-instruct")
    messages: list[Message] | None = None
    prompt: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=lambda: f"req-{uuid.uuid4().hex[:16]}")
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise InvalidParameterError("messages", "give either messages (chat) or prompt (completion)")
        if self.messages is not None:
            if not self.messages:
                raise InvalidParameterError("messages", "must not be empty")
            self.messages = [Message.coerce(m) for m in self.messages]
        elif not isinstance(self.prompt, str):
            raise InvalidParameterError("prompt", f"must be a string, got {self.prompt!r}")

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@runtime_checkable
class Provider(Protocol):
    name: str  # "github", "azure", "nim", "ollama", "openai"

    def stream(self, request: ProviderRequest) -> Iterator[RequestOutput]:
        """Deltas of one request; the last has finish_reason, usage and timings."""
        ...

    def astream(self, request: ProviderRequest) -> AsyncIterator[RequestOutput]:
        """`stream` for asyncio; closing the iterator early closes the HTTP response."""
        ...

    def abort(self, request_id: str) -> bool:
        """Stop a running request: its stream ends with ``finish_reason="abort"``."""
        ...

    def known_models(self) -> list[str]:
        """The Phi models this provider is known to serve (a static list: no network)."""
        ...


# -- refusing what a provider cannot honour -----------------------------------------------
_DEFAULTS = SamplingParams()

WHY_NOT_OVER_HTTP = {
    "logits_processors": "they are Python functions and cannot be sent to a remote API",
    "num_beams": "no remote API offers beam search; use a local model for num_beams > 1",
    "logprobs": "remote APIs return token text, not token ids; use a local model for logprobs",
    "regex": "remote APIs take JSON Schemas, not regexes; use a local model for regex output",
    "grammar": "remote APIs take JSON Schemas, not grammars; use a local model for grammar output",
}


def wire_schema(schema: Any) -> Any:
    """A JSON Schema as sent to a provider: without llguidance's own ``x-guidance`` options."""
    if isinstance(schema, dict):
        return {k: v for k, v in schema.items() if k != "x-guidance"}
    return schema


def wire_tool_choice(params: SamplingParams) -> Any:
    """OpenAI's ``tool_choice``: a mode, or ``{"type": "function", "function": {"name"}}``."""
    if params.tool_choice in ("auto", "none", "required"):
        return params.tool_choice
    return {"type": "function", "function": {"name": params.tool_choice}}


def refuse_unsupported(provider: str, params: SamplingParams, unsupported: dict[str, str]) -> None:
    """Raise `InvalidParameterError` for the first of ``unsupported`` (field -> why) that is not
    at its default, so nothing the caller asked for is silently dropped."""
    for f in fields(SamplingParams):
        why = unsupported.get(f.name)
        if why is not None and getattr(params, f.name) != getattr(_DEFAULTS, f.name):
            raise InvalidParameterError(f.name, f"the {provider} provider cannot honour it: {why}")


# -- turning wire chunks into outputs -----------------------------------------------------
_FINISH_REASONS = {"stop": "stop", "eos": "stop", "end_turn": "stop", "length": "length",
                   "max_tokens": "length", "abort": "abort"}


def finish_reason(raw: str | None) -> str:
    """Our name for a provider's finish reason; ones we have no name for (``content_filter``,
    ``tool_calls``) pass through as they are."""
    if not raw:
        return "stop"
    return _FINISH_REASONS.get(raw, raw)


class OutputBuilder:
    """Makes the outputs of one request and measures its timings on the client's clock
    (time to first token includes the network, which is what the caller experiences)."""

    def __init__(self, request_id: str):
        self.request_id = request_id
        self.started = time.perf_counter()
        self.first_at: float | None = None
        self.text_chars = 0

    def delta(self, text: str | None) -> list[RequestOutput]:
        if not text:
            return []
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.text_chars += len(text)
        return [RequestOutput(text, [], request_id=self.request_id)]

    def final(self, reason: str, usage: Usage | None, timings: Timings | None = None) -> RequestOutput:
        now = time.perf_counter()
        first = self.first_at or now
        measured = Timings(prefill_seconds=first - self.started, decode_seconds=now - first,
                           time_to_first_token=first - self.started)
        if timings is not None:  # the server's own figures, with our time to first token
            measured = Timings(timings.prefill_seconds, timings.decode_seconds, measured.time_to_first_token)
        return RequestOutput("", [], finish_reason=reason, usage=usage or Usage(), timings=measured,
                             request_id=self.request_id)


class StreamParser:
    """Reads one response body line by line; subclasses implement `feed` for their wire format
    and set ``done`` / ``finish`` / ``usage`` / ``timings`` as the stream tells them."""

    def __init__(self, provider: str, builder: OutputBuilder):
        self.provider = provider
        self.builder = builder
        self.done = False  # the wire said the stream is over: stop reading
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.timings: Timings | None = None  # the server's own, when it reports them
        self.tool_calls: list[ToolCall] = []  # the calls the model made, as the stream built them

    def feed(self, line: str) -> Iterable[RequestOutput]:
        """Outputs for one line of the body; raises `ProviderError` for an error the stream carries."""
        raise NotImplementedError

    def decode_chunk(self, raw: str, what: str) -> dict[str, Any]:
        """One JSON object of the stream (an NDJSON ``line``, an SSE ``event``), or `ProviderError`."""
        try:
            chunk = json.loads(raw)
        except ValueError:
            raise ProviderError(f"{self.provider} sent an unreadable stream {what}: {raw[:200]!r}",
                                provider=self.provider, code="bad_stream") from None
        if not isinstance(chunk, dict):
            raise ProviderError(f"{self.provider} sent an unexpected stream {what}: {raw[:200]!r}",
                                provider=self.provider, code="bad_stream")
        return chunk

    def flush(self) -> Iterable[RequestOutput]:
        """Outputs still held when the body ends."""
        return []

    def end(self) -> RequestOutput:
        """The final output, or raise if the stream stopped before the model finished."""
        if self.finish is None and not self.done:
            raise ProviderError(
                f"{self.provider} ended the stream before the model finished "
                f"({self.builder.text_chars} characters had arrived)", provider=self.provider,
                code="stream_interrupted")
        final = self.builder.final(self.finish or "stop", self.usage, self.timings)
        final.tool_calls = list(self.tool_calls)
        if self.tool_calls and final.finish_reason == "stop":
            final.finish_reason = "tool_calls"
        return final

    def aborted(self) -> RequestOutput:
        return self.builder.final("abort", self.usage)


class HttpProvider:
    """The request loop every provider shares; subclasses say how to build the call and how to
    read the stream."""

    name = "provider"

    def __init__(self, *, transport: HttpTransport | None = None):
        self.transport = transport or shared_transport()
        self._aborted: set[str] = set()
        self._running: set[str] = set()
        self._lock = threading.Lock()

    # subclass hooks
    @property
    def base_url(self) -> str:
        raise NotImplementedError

    def build_call(self, request: ProviderRequest) -> HttpCall:
        raise NotImplementedError

    def new_parser(self, request: ProviderRequest, builder: OutputBuilder) -> StreamParser:
        raise NotImplementedError

    def known_models(self) -> list[str]:
        return []

    # the Provider interface
    def stream(self, request: ProviderRequest) -> Iterator[RequestOutput]:
        call = self.build_call(request)  # parameter errors surface here, before any I/O
        return self._stream(request, call)

    def astream(self, request: ProviderRequest) -> AsyncIterator[RequestOutput]:
        call = self.build_call(request)
        return self._astream(request, call)

    def abort(self, request_id: str) -> bool:
        """Ends the request's stream at the next chunk the server sends, with ``"abort"``."""
        with self._lock:
            if request_id not in self._running:
                return False
            self._aborted.add(request_id)
            return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _stream(self, request: ProviderRequest, call: HttpCall) -> Iterator[RequestOutput]:
        parser = self.new_parser(request, OutputBuilder(request.request_id))
        self._start(request.request_id)
        try:
            with self.transport.open(call) as response:
                for line in self.transport.lines(response, call):
                    yield from parser.feed(line)
                    if self._is_aborted(request.request_id):
                        yield parser.aborted()
                        return
                    if parser.done:
                        break
                if not parser.done:
                    yield from parser.flush()
            yield parser.end()
        finally:
            self._stop(request.request_id)

    async def _astream(self, request: ProviderRequest, call: HttpCall) -> AsyncIterator[RequestOutput]:
        parser = self.new_parser(request, OutputBuilder(request.request_id))
        self._start(request.request_id)
        try:
            async with self.transport.aopen(call) as response:
                async for line in self.transport.alines(response, call):
                    for out in parser.feed(line):
                        yield out
                    if self._is_aborted(request.request_id):
                        yield parser.aborted()
                        return
                    if parser.done:
                        break
                if not parser.done:
                    for out in parser.flush():
                        yield out
            yield parser.end()
        finally:
            self._stop(request.request_id)

    def _start(self, request_id: str) -> None:
        with self._lock:
            self._running.add(request_id)

    def _stop(self, request_id: str) -> None:
        with self._lock:
            self._running.discard(request_id)
            self._aborted.discard(request_id)

    def _is_aborted(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._aborted


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def qualify_phi(model: str, *, lowercase: bool = False) -> str:
    """Catalogues that name models ``publisher/name`` know Phi as ``microsoft/...``; a bare Phi
    name gets the publisher, anything else is sent as given."""
    if "/" in model or not model.lower().startswith("phi-"):
        return model
    return "microsoft/" + (model.lower() if lowercase else model)
