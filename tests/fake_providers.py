"""Fake provider servers on 127.0.0.1 that speak each wire format (shared/REFERENCE.md section 5).

One `FakeProvider` per test: a `ThreadingHTTPServer` that checks the path and the credential
the way its provider does (answering with that provider's error body), records every request
(path, query, headers, JSON body) so tests can assert what was sent, and streams a fixed reply
as SSE (OpenAI-shaped kinds) or NDJSON (Ollama). Scripted actions, consumed one per request,
make it answer an error status, hang up before answering, cut the connection mid-stream, put an
error in the stream, or stream slowly (to watch the client go away).

The client side the provider tests share is at the end: fixtures (import them into a test module
to use them) and small helpers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import deque
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from slmkit.providers import (
    HttpTransport,
    Provider,
    ProviderRequest,
    ProviderSettings,
    ProvidersConfig,
    RetryPolicy,
    Timeouts,
    get_provider,
)
from slmkit.types import SamplingParams

PIECES = ["Hello", " there", "!", " How", " can", " I", " help", "?"]
REPLY = "".join(PIECES)
PROMPT_TOKENS = 12
KEY = "secret-key"

DEFAULT_MODELS = {
    "openai": {"test-model"},
    "github": {"microsoft/Phi-3.5-mini-instruct"},
    "azure": {"Phi-3.5-mini-instruct"},
    "nim": {"microsoft/phi-3.5-mini-instruct"},
    "ollama": {"phi3.5"},
}
# Fields Azure AI Inference knows; others are a 400 unless `extra-parameters: pass-through`.
AZURE_FIELDS = {"messages", "model", "stream", "temperature", "top_p", "max_tokens", "stop", "seed",
                "frequency_penalty", "presence_penalty", "response_format", "tools", "tool_choice", "modalities"}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any


@dataclass
class Reply:
    """Answer with this status and body instead of generating."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hangup:
    """Close the connection without answering."""


@dataclass
class Stall:
    """Take the request, then send nothing for `seconds` (a provider that hangs)."""

    seconds: float = 30.0


@dataclass
class Drop:
    """Stream `after` pieces, then cut the connection (no end of the chunked body)."""

    after: int


@dataclass
class StreamError:
    """Stream `after` pieces, then an error event / line (status stays 200)."""

    after: int
    message: str = "the model crashed"


@dataclass
class Say:
    """Stream these pieces instead of the fixed reply."""

    pieces: list[str]


@dataclass
class Slow:
    """Stream `pieces` pieces `delay` seconds apart."""

    delay: float = 0.02
    pieces: int = 500


class FakeProvider:
    def __init__(self, kind: str, *, key: str | None = KEY, models: set[str] | None = None):
        assert kind in DEFAULT_MODELS, kind
        self.kind = kind
        self.key = key
        self.models = DEFAULT_MODELS[kind] if models is None else models
        self.requests: list[Recorded] = []
        self.script: deque[Any] = deque()
        self.disconnected = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                                        daemon=True)

    @property
    def root(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """What the provider is configured with."""
        suffix = {"openai": "/v1", "github": "/inference", "azure": "", "nim": "/v1", "ollama": ""}[self.kind]
        return self.root + suffix

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def queue(self, *actions: Any) -> "FakeProvider":
        self.script.extend(actions)
        return self

    def __enter__(self) -> "FakeProvider":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- request handling (runs in the server's threads) ---------------------------------
    def handle(self, handler: "_Handler", rec: Recorded) -> None:
        self.requests.append(rec)
        route = self._route(rec)
        if route is None:
            return _send_json(handler, 404, self._error_body(404, f"no route for {rec.path}"))
        if not self._authorized(rec):
            return _send_json(handler, 401, self._error_body(401, "bad credentials"))
        if self.kind == "azure":
            if "api-version" not in rec.query:
                return _send_json(handler, 400, self._error_body(400, "api-version is required"))
            extra = sorted(set(rec.body) - AZURE_FIELDS)
            if extra and rec.headers.get("extra-parameters") != "pass-through":
                return _send_json(handler, 400, self._error_body(
                    400, f"Extra parameters {extra} are not allowed when extra-parameters is not set or set "
                         "to be 'error'. Set extra-parameters to 'pass-through' to pass to the model."))
        problem = self._check_messages(rec.body.get("messages"))
        if problem:
            return _send_json(handler, 400, self._error_body(400, problem))
        model = rec.body.get("model")
        if (model is not None or self.kind != "azure") and model not in self.models:
            return _send_json(handler, 404, self._error_body(404, f"unknown model {model!r}", model=True))
        action = self.script.popleft() if self.script else None
        if isinstance(action, Reply):
            return _send_json(handler, action.status, action.body, action.headers)
        if isinstance(action, Hangup):
            handler.close_connection = True
            return None
        if isinstance(action, Stall):
            time.sleep(action.seconds)
            handler.close_connection = True
            return None
        if self.kind == "ollama":
            return self._ndjson(handler, rec, route, action)
        return self._sse(handler, rec, route, action)

    def _route(self, rec: Recorded) -> str | None:
        if rec.method != "POST":
            return None
        paths = {
            "openai": {"/v1/chat/completions": "chat", "/v1/completions": "completion"},
            "github": {"/inference/chat/completions": "chat"},
            "azure": {"/chat/completions": "chat"},
            "nim": {"/v1/chat/completions": "chat", "/v1/completions": "completion"},
            "ollama": {"/api/chat": "chat", "/api/generate": "completion"},
        }[self.kind]
        if self.kind == "github" and rec.path.startswith("/orgs/") and rec.path.endswith("/inference/chat/completions"):
            return "chat"
        return paths.get(rec.path)

    def _authorized(self, rec: Recorded) -> bool:
        if self.key is None:
            return True
        if self.kind == "azure" and rec.headers.get("api-key") == self.key:
            return True
        return rec.headers.get("authorization") == f"Bearer {self.key}"

    def _check_messages(self, messages: Any) -> str | None:
        """What is wrong with the messages in this wire format, if anything: OpenAI-shaped APIs
        take content as text or parts (text, image_url with a data: or http(s) url); Ollama takes
        text content and ``images`` as bare base64."""
        for i, message in enumerate(messages or []):
            content = message.get("content")
            if self.kind == "ollama":
                if not isinstance(content, str):
                    return f"messages[{i}].content must be a string"
                for image in message.get("images") or []:
                    if not isinstance(image, str) or image.startswith("data:"):
                        return f"messages[{i}].images must be base64 strings"
                    try:
                        base64.b64decode(image, validate=True)
                    except ValueError:
                        return f"messages[{i}].images: illegal base64 data"
                continue
            if isinstance(content, str):
                continue
            if not isinstance(content, list) or "images" in message:
                return f"messages[{i}].content must be a string or an array of content parts"
            for part in content:
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    continue
                image_url = part.get("image_url") if part.get("type") == "image_url" else None
                url = image_url.get("url") if isinstance(image_url, dict) else None
                if (not isinstance(url, str) or not url.startswith(("data:image/", "http://", "https://"))
                        or image_url.get("detail", "auto") not in ("auto", "low", "high")):
                    return f"messages[{i}]: invalid content part {json.dumps(part)[:80]}"
        return None

    def _error_body(self, status: int, message: str, *, model: bool = False) -> Any:
        if self.kind == "ollama":
            return {"error": f"model {message.split()[-1]} not found, try pulling it first" if model else message}
        if self.kind == "nim":
            return {"status": status, "title": {401: "Unauthorized", 404: "Not Found"}.get(status, "Bad Request"),
                    "detail": message}
        if self.kind in ("azure", "github"):
            return {"error": {"code": {401: "unauthorized", 404: "unknown_model"}.get(status, "BadRequest"),
                              "message": message}}
        return {"error": {"message": message, "type": "invalid_request_error", "param": "model" if model else None,
                          "code": "model_not_found" if model else None}}

    # -- streams -------------------------------------------------------------------------
    def _pieces(self, limit: int | None, action: Any) -> tuple[list[str], str]:
        if isinstance(action, Say):
            pieces = list(action.pieces)
        else:
            pieces = [f" tok{i}" for i in range(action.pieces)] if isinstance(action, Slow) else list(PIECES)
        if limit is not None and limit < len(pieces):
            return pieces[:limit], "length"
        return pieces, "stop"

    def _sse(self, handler: "_Handler", rec: Recorded, route: str, action: Any) -> None:
        body = rec.body
        chat = route == "chat"
        pieces, reason = self._pieces(body.get("max_tokens"), action)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(pieces),
                 "total_tokens": PROMPT_TOKENS + len(pieces), "prompt_tokens_details": {"cached_tokens": 4}}
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": body.get("model", "")}

        def chunk(text: str | None, finish: str | None, role: bool = False) -> dict:
            if chat:
                delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            data = {**base, "choices": [choice]}
            if include_usage:
                data["usage"] = None
            return data

        out = _Chunked(handler, "text/event-stream", self)

        def event(data: Any) -> bool:
            text = data if isinstance(data, str) else json.dumps(data)
            return out.write(f"data: {text}\n\n".encode())

        if chat and not event(chunk(None, None, role=True)):
            return None
        for i, piece in enumerate(pieces):
            if isinstance(action, Drop) and i == action.after:
                return out.cut()
            if isinstance(action, StreamError) and i == action.after:
                event({"error": {"message": action.message, "type": "server_error", "param": None, "code": None}})
                return out.end()
            if isinstance(action, Slow):
                time.sleep(action.delay)
            if not event(chunk(piece, None)):
                return None
        final = chunk(None, reason)
        if self.kind == "azure":  # Azure puts usage in its last chunk, unasked
            final["usage"] = usage
        event(final)
        if include_usage:
            event({**base, "choices": [], "usage": usage})
        event("[DONE]")
        return out.end()

    def _ndjson(self, handler: "_Handler", rec: Recorded, route: str, action: Any) -> None:
        body = rec.body
        chat = route == "chat"
        pieces, reason = self._pieces((body.get("options") or {}).get("num_predict"), action)
        base = {"model": body["model"], "created_at": "2024-06-01T00:00:00.000000000Z"}
        out = _Chunked(handler, "application/x-ndjson", self)

        def line(data: dict) -> bool:
            return out.write((json.dumps(data) + "\n").encode())

        def piece_of(text: str) -> dict:
            return {**base, "message": {"role": "assistant", "content": text}} if chat else {**base, "response": text}

        for i, piece in enumerate(pieces):
            if isinstance(action, Drop) and i == action.after:
                return out.cut()
            if isinstance(action, StreamError) and i == action.after:
                line({"error": action.message})
                return out.end()
            if isinstance(action, Slow):
                time.sleep(action.delay)
            if not line({**piece_of(piece), "done": False}):
                return None
        line({**piece_of(""), "done": True, "done_reason": reason, "total_duration": 900_000_000,
              "load_duration": 100_000_000, "prompt_eval_count": PROMPT_TOKENS,
              "prompt_eval_duration": 250_000_000, "eval_count": len(pieces), "eval_duration": 500_000_000})
        return out.end()


class _Chunked:
    """A chunked response body; a failed write means the client went away."""

    def __init__(self, handler: "_Handler", content_type: str, fake: FakeProvider):
        self.handler = handler
        self.fake = fake
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

    def write(self, data: bytes) -> bool:
        try:
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.handler.wfile.flush()
            return True
        except OSError:
            self.fake.disconnected.set()
            self.handler.close_connection = True
            return False

    def end(self) -> None:
        try:
            self.handler.wfile.write(b"0\r\n\r\n")
            self.handler.wfile.flush()
        except OSError:
            self.fake.disconnected.set()

    def cut(self) -> None:
        self.handler.close_connection = True


def _send_json(handler: "_Handler", status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away is routine here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        rec = Recorded(method="POST", path=url.path, query=dict(parse_qsl(url.query)),
                       headers={k.lower(): v for k, v in self.headers.items()},
                       body=json.loads(raw) if raw else {})
        self.server.fake.handle(self, rec)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- the client side of the provider tests ------------------------------------------------
KINDS = ["openai", "github", "azure", "nim", "ollama"]
MODEL = {"openai": "test-model", "github": "Phi-3.5-mini-instruct", "azure": "Phi-3.5-mini-instruct",
         "nim": "phi-3.5-mini-instruct", "ollama": "phi3.5"}
WIRE_MODEL = {"openai": "test-model", "github": "microsoft/Phi-3.5-mini-instruct",
              "azure": "Phi-3.5-mini-instruct", "nim": "microsoft/phi-3.5-mini-instruct", "ollama": "phi3.5"}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]


class Recorder:
    """Injectable sleeps: the waits are recorded, not slept."""

    def __init__(self):
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def waits():
    return Recorder()


@pytest.fixture
def transport(waits):
    t = HttpTransport(timeouts=Timeouts(connect=2, read=5), retry=RetryPolicy(max_retries=3, base_delay=0.5),
                      sleep=waits.sleep, async_sleep=waits.async_sleep, random=lambda: 0.5)
    yield t
    t.close()


@pytest.fixture(params=KINDS)
def fake(request):
    kind = request.param
    with FakeProvider(kind, key=None if kind == "ollama" else KEY) as server:
        yield server


def provider_for(fake: FakeProvider, transport: HttpTransport, **settings) -> Provider:
    values = {"base_url": fake.base_url, "api_key": None if fake.kind == "ollama" else KEY, **settings}
    return get_provider(fake.kind, config=ProvidersConfig({fake.kind: ProviderSettings(**values)}),
                        transport=transport)


def chat(fake: FakeProvider, **params) -> ProviderRequest:
    return ProviderRequest(MODEL[fake.kind], messages=CHAT, params=SamplingParams(**params))


def run(provider: Provider, request: ProviderRequest):
    return list(provider.stream(request))


def arun(provider: Provider, request: ProviderRequest):
    async def collect():
        return [out async for out in provider.astream(request)]
    return asyncio.run(collect())


def keep_responses(transport: HttpTransport) -> list:
    """Record (and so keep alive) every response the transport opens."""
    responses: list = []
    open_, aopen = transport.open, transport.aopen

    @contextmanager
    def recording_open(call):
        with open_(call) as response:
            responses.append(response)
            yield response

    @asynccontextmanager
    async def recording_aopen(call):
        async with aopen(call) as response:
            responses.append(response)
            yield response

    transport.open, transport.aopen = recording_open, recording_aopen
    return responses
