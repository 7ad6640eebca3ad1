"""The one HTTP transport every provider shares: timeouts, retries, error mapping.

A request is retried (exponential backoff with jitter, or exactly the wait the server asks for
in ``x-ratelimit-timeremaining`` / ``retry-after-ms`` / ``Retry-After``) on 408, 429, 5xx and on
connection failures — but only until a response with a 2xx status has arrived. From then on
nothing is retried: the caller may already hold part of the answer, and a second request would
bill and generate it again.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random as _random
import threading
import time
import weakref
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping

import httpx

from slmkit.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderNotFoundError,
    ProviderRateLimitError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)

log = logging.getLogger("slmkit.providers")

# Failures before any response: nothing was generated, so another attempt is safe.
_RETRYABLE_TRANSPORT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ReadError,
                        httpx.WriteError, httpx.RemoteProtocolError)
_NOT_RETRYABLE_5XX = {501, 505}


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``read`` is the longest silence between two bytes: a cloud model may think that
    long before its first token, so it is generous."""

    connect: float = 10.0
    read: float = 120.0
    write: float = 30.0
    pool: float = 10.0

    def to_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` further attempts after the first. Backoff before retry ``n`` (0-based) is
    uniform in ``[d/2, d]`` with ``d = min(max_delay, base_delay * 2**n)``; a wait the server
    asks for is honoured as given, unless it is longer than ``max_wait`` — then the error is
    raised at once with that wait in it, rather than blocking the caller for minutes."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_wait: float = 60.0

    def backoff(self, retry: int, random: Callable[[], float] = _random.random) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2 ** retry))
        return ceiling / 2 + random() * ceiling / 2


@dataclass
class ErrorHints:
    """What an error message needs to tell the user what to check."""

    provider: str
    model: str
    base_url: str
    credential_variable: str | None = None  # "GITHUB_TOKEN"
    base_url_variable: str | None = None  # "OLLAMA_HOST"
    auth_help: str = ""  # e.g. the permission a token needs
    not_found_help: str = ""  # e.g. "run `ollama pull phi3.5`"


@dataclass
class HttpCall:
    url: str
    body: dict[str, Any]
    hints: ErrorHints
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


class HttpTransport:
    """A shared `httpx.Client` (and one `httpx.AsyncClient` per event loop) with retries.

    ``sleep`` / ``async_sleep`` / ``random`` are injectable so tests can record the waits
    instead of sleeping through them.
    """

    def __init__(self, *, timeouts: Timeouts = Timeouts(), retry: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep,
                 async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 random: Callable[[], float] = _random.random):
        self.timeouts = timeouts
        self.retry = retry
        self.sleep = sleep
        self.async_sleep = async_sleep
        self.random = random
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        # An AsyncClient's connections belong to the loop that opened them.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary())

    @property
    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeouts.to_httpx())
            return self._client

    def async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                client = httpx.AsyncClient(timeout=self.timeouts.to_httpx())
                self._async_clients[loop] = client
            return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- opening a response, with retries --------------------------------------------------
    @contextmanager
    def open(self, call: HttpCall) -> Iterator[httpx.Response]:
        """A 2xx response whose body is still to be read; closed when the block ends."""
        attempt = 0
        while True:
            try:
                response = self.client.send(self._build(self.client, call), stream=True)
            except httpx.TransportError as exc:
                wait = self._wait_after_failure(attempt, exc, call)
            else:
                if response.is_success:
                    break
                try:
                    body = response.read()
                except httpx.TransportError:
                    body = b""
                finally:
                    response.close()
                wait = self._wait_after_status(attempt, response, body, call)
            self.sleep(wait)
            attempt += 1
        try:
            yield response
        finally:
            response.close()

    @asynccontextmanager
    async def aopen(self, call: HttpCall) -> AsyncIterator[httpx.Response]:
        """`open` for asyncio."""
        client = self.async_client()
        attempt = 0
        while True:
            try:
                response = await client.send(self._build(client, call), stream=True)
            except httpx.TransportError as exc:
                wait = self._wait_after_failure(attempt, exc, call)
            else:
                if response.is_success:
                    break
                try:
                    body = await response.aread()
                except httpx.TransportError:
                    body = b""
                finally:
                    await response.aclose()
                wait = self._wait_after_status(attempt, response, body, call)
            await self.async_sleep(wait)
            attempt += 1
        try:
            yield response
        finally:
            await response.aclose()

    # -- reading the body ------------------------------------------------------------------
    def lines(self, response: httpx.Response, call: HttpCall) -> Iterator[str]:
        """The body line by line; a broken connection becomes a `ProviderError` (not retried)."""
        try:
            yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise _stream_error(exc, call) from exc

    async def alines(self, response: httpx.Response, call: HttpCall) -> AsyncIterator[str]:
        try:
            async for line in response.aiter_lines():
                yield line
        except httpx.TransportError as exc:
            raise _stream_error(exc, call) from exc

    # -- retry decisions -------------------------------------------------------------------
    def _build(self, client: httpx.Client | httpx.AsyncClient, call: HttpCall) -> httpx.Request:
        return client.build_request(call.method, call.url, json=call.body, headers=call.headers)

    def _wait_after_failure(self, attempt: int, exc: httpx.TransportError, call: HttpCall) -> float:
        """Seconds to wait before retrying after no response came, or raise."""
        hints = call.hints
        if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
            raise ProviderTimeoutError(
                f"{hints.provider} sent no answer within {self.timeouts.read:g} s ({call.url}); the model may be "
                "loading or overloaded — try again, or raise the read timeout", provider=hints.provider,
                code="timeout") from exc
        if not isinstance(exc, _RETRYABLE_TRANSPORT) or attempt >= self.retry.max_retries:
            where = f" (set {hints.base_url_variable} if it runs elsewhere)" if hints.base_url_variable else ""
            raise ProviderUnavailableError(
                f"cannot reach {hints.provider} at {hints.base_url} after {attempt + 1} attempt(s): "
                f"{_describe(exc)}; check that it is running and reachable{where}",
                provider=hints.provider, code="provider_unreachable") from exc
        wait = self.retry.backoff(attempt, self.random)
        log.info("%s: %s; retry %d/%d in %.2f s", hints.provider, _describe(exc), attempt + 1,
                 self.retry.max_retries, wait)
        return wait

    def _wait_after_status(self, attempt: int, response: httpx.Response, body: bytes, call: HttpCall) -> float:
        """Seconds to wait before retrying after an error status, or raise its error."""
        status = response.status_code
        retryable = status in (408, 429) or (status >= 500 and status not in _NOT_RETRYABLE_5XX)
        if not retryable:
            raise status_error(status, body, call.hints)
        asked = retry_after_seconds(response.headers)
        if asked is not None and asked > self.retry.max_wait:
            raise status_error(status, body, call.hints, retry_after=asked, gave_up=f"it asks to wait {asked:g} s")
        if attempt >= self.retry.max_retries:
            raise status_error(status, body, call.hints, retry_after=asked,
                               gave_up=f"still failing after {attempt + 1} attempts")
        wait = asked if asked is not None else self.retry.backoff(attempt, self.random)
        log.info("%s answered %d; retry %d/%d in %.2f s", call.hints.provider, status, attempt + 1,
                 self.retry.max_retries, wait)
        return wait


_shared: HttpTransport | None = None
_shared_lock = threading.Lock()


def shared_transport() -> HttpTransport:
    """The process-wide transport providers use unless given one: one connection pool."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = HttpTransport()
        return _shared


# -- headers and error bodies -------------------------------------------------------------
def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a server asks for: GitHub's ``x-ratelimit-timeremaining`` first (as gh-models
    reads it), then ``retry-after-ms``, then ``Retry-After`` (seconds or an HTTP date)."""
    for name, scale in (("x-ratelimit-timeremaining", 1.0), ("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip()
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        if name == "retry-after":
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            return max(0.0, when.timestamp() - time.time())
    return None


def upstream_message(body: bytes | str) -> tuple[str, str | None]:
    """(message, param) from an error body in any of the shapes providers use: OpenAI
    ``{"error": {"message", "param"}}``, Azure ``{"error": {"code", "message"}}``, Ollama
    ``{"error": "..."}``, NVIDIA ``{"title", "detail"}``, FastAPI ``{"detail"}``, or plain text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return _clip(" ".join(text.split())), None
    if not isinstance(data, dict):
        return _clip(text.strip()), None
    error = data.get("error")
    if isinstance(error, str):
        return _clip(error), None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code = error.get("code")
        if code and str(code) not in message:
            message = f"{code}: {message}" if message else str(code)
        param = error.get("param") or error.get("target")
        return _clip(message or json.dumps(error)), param if isinstance(param, str) else None
    detail, title = data.get("detail"), data.get("title")
    if isinstance(detail, str):
        return _clip(f"{title}: {detail}" if isinstance(title, str) and title not in detail else detail), None
    if detail is not None:
        return _clip(json.dumps(detail)), None
    if isinstance(data.get("message"), str):
        return _clip(data["message"]), None
    return _clip(text.strip()), None


def status_error(status: int, body: bytes | str, hints: ErrorHints, *, retry_after: float | None = None,
                 gave_up: str = "") -> ProviderError:
    """The error for an HTTP error status, saying what to check."""
    upstream, param = upstream_message(body)
    said = f" ({status}: {upstream})" if upstream else f" ({status})"
    provider, model = hints.provider, hints.model
    if status == 401:
        check = (f"check {hints.credential_variable}" if hints.credential_variable
                 else "the server needs an API key")
        return ProviderAuthError(
            f"{provider} refused the credential{said}; {check}{_sentence(hints.auth_help)}",
            provider=provider, upstream_status=status, code="provider_unauthorized")
    if status == 403:
        check = f" check {hints.credential_variable} and" if hints.credential_variable else ""
        return ProviderAuthError(
            f"{provider} denied access to model {model!r}{said};{check} that the credential may use this "
            f"model{_sentence(hints.auth_help)}", provider=provider, upstream_status=status, code="provider_forbidden")
    if status == 404:
        where = f" (set by {hints.base_url_variable})" if hints.base_url_variable else ""
        return ProviderNotFoundError(
            f"{provider} has no model {model!r} at {hints.base_url}{said}; check the model id and the base "
            f"URL{where}{_sentence(hints.not_found_help)}",
            provider=provider, upstream_status=status, param="model", code="model_not_found")
    if status in (400, 413, 422):
        return ProviderRequestError(f"{provider} rejected the request{said}", provider=provider,
                                    upstream_status=status, param=param, code="provider_bad_request")
    if status == 429:
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else "; try again later"
        return ProviderRateLimitError(f"{provider} rate limit reached{said}, {gave_up}{wait}",
                                      provider=provider, retry_after=retry_after)
    gave = f", {gave_up}" if gave_up else ""
    return ProviderUnavailableError(f"{provider} failed{said}{gave}", provider=provider, upstream_status=status,
                                    code="provider_error")


def _stream_error(exc: httpx.TransportError, call: HttpCall) -> ProviderError:
    provider = call.hints.provider
    if isinstance(exc, httpx.ReadTimeout):
        return ProviderTimeoutError(
            f"{provider} stopped sending for over the read timeout in the middle of the answer; not retried "
            "because part of it had already arrived", provider=provider, code="timeout")
    return ProviderError(
        f"the connection to {provider} broke in the middle of the answer ({_describe(exc)}); not retried "
        "because part of it had already arrived", provider=provider, code="stream_interrupted")


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sentence(text: str) -> str:
    return f"; {text}" if text else ""


def _clip(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
