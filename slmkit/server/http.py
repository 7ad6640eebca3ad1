"""HTTP plumbing shared by the three APIs: JSON bodies in, each API's own error shape out."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Awaitable, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from slmkit.errors import (
    InvalidParameterError,
    InvalidRequestError,
    OverloadedError,
    PayloadTooLargeError,
    RateLimitError,
    SlmkitError,
)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
log = logging.getLogger("slmkit.server")


async def read_json(request: Request, *, allow_empty: bool = False) -> Any:
    body = await request.body()
    limit = request.app.state.ctx.config.max_body_bytes
    if len(body) > limit:
        raise PayloadTooLargeError(f"the request body is {len(body)} bytes; this server accepts at most {limit}")
    if not body.strip():
        if allow_empty:
            return {}
        raise InvalidRequestError("the request body is empty; send a JSON object")
    try:
        data = json.loads(body)
        _check_unicode(data)
        return data
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequestError("the request body nests too deeply") from None


def _check_unicode(value: Any, where: str = "body") -> None:
    """JSON's ``\\ud800`` escapes give strings that are not Unicode text (lone surrogates): no
    tokenizer or UTF-8 encoder can take them, so they are refused here, once, for every route."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidParameterError(at, "is not valid Unicode text (a lone surrogate such as \\ud800)") from None
        elif isinstance(item, dict):
            stack.extend((k, at) for k in item)
            # A key may itself hold a surrogate: name it escaped, or the error body could not be encoded.
            names = ((v, str(k).encode("utf-8", "backslashreplace").decode()) for k, v in item.items())
            stack.extend((v, name if at == "body" else f"{at}.{name}") for v, name in names)
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))


def parse_model(model: type[M], data: Any) -> M:
    """Validate a decoded body; the first problem becomes a 400 naming the field."""
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p)))
        kind = err["type"]
        if kind == "extra_forbidden":
            raise InvalidParameterError(loc, "unrecognized request argument") from None
        if kind == "missing":
            raise InvalidParameterError(loc, "required field is missing") from None
        raise InvalidParameterError(loc or "body", f"{err['msg']} (got {_short(err.get('input'))})") from None


def parse_nested(model: type[M], data: Any, where: str, sep: str = ".") -> M:
    """`parse_model` for one part of a body (a tool, an input item): problems name `where` first."""
    if not isinstance(data, dict):
        raise InvalidParameterError(where, f"must be an object, got {_short(data)}")
    try:
        return parse_model(model, data)
    except InvalidParameterError as exc:
        raise InvalidParameterError(where if exc.param == "body" else f"{where}{sep}{exc.param}", exc.detail) from None


# pydantic names the union member it tried in an error's location ("stop.list[str]"): not a field.
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|function-.*|[A-Z]\w*)$")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _headers(exc: SlmkitError) -> dict[str, str]:
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, (RateLimitError, OverloadedError)) and retry_after is not None:
        return {"Retry-After": str(max(1, round(retry_after)))}
    return {}


def openai_error(exc: SlmkitError) -> JSONResponse:
    body = {"error": {"message": exc.message, "type": exc.error_type, "param": exc.param, "code": exc.code}}
    return JSONResponse(body, status_code=exc.status_code, headers=_headers(exc))


def azure_error(exc: SlmkitError) -> JSONResponse:
    code = exc.code or exc.error_type
    body = {"error": {"code": code, "message": exc.message, "target": exc.param, "details": [],
                      "innererror": {"code": exc.error_type}}}
    return JSONResponse(body, status_code=exc.status_code, headers={**_headers(exc), "x-ms-error-code": code})


def ollama_error(exc: SlmkitError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=_headers(exc))


# Anthropic's error types by status (docs.anthropic.com "Errors"); 503 is its overloaded_error.
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    500: "api_error", 503: "overloaded_error", 504: "timeout_error"}


def anthropic_error_body(exc: SlmkitError) -> dict:
    kind = _ANTHROPIC_TYPES.get(exc.status_code, "invalid_request_error" if exc.status_code < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def anthropic_error(exc: SlmkitError) -> JSONResponse:
    return JSONResponse(anthropic_error_body(exc), status_code=exc.status_code, headers=_headers(exc))


def api_of(path: str) -> str:
    if path.startswith("/api/"):
        return "ollama"
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    if path.startswith("/v1/") or path in ("/health", "/metrics", "/"):
        return "openai"
    return "azure"


def error_response(path: str, exc: SlmkitError) -> JSONResponse:
    shapes = {"ollama": ollama_error, "azure": azure_error, "anthropic": anthropic_error}
    return shapes.get(api_of(path), openai_error)(exc)


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of a stream


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event; ``event`` names it (the Responses and Anthropic streams do)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


CLIENT_CLOSED = 499  # nginx's "client closed request": logged and counted, read by nobody


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | Response:
    """Await `work` (a whole non-streaming generation), cancelling it the moment the client
    disconnects: cancelling closes its token streams, which aborts them in the engine and frees
    their KV cells. Streaming responses need none of this: Starlette cancels their body."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    log.info("client left %s before the answer was ready; its generation was aborted", request.url.path)
    return Response(status_code=CLIENT_CLOSED)


async def _disconnected(request: Request) -> None:
    # The body has been read: the next message the server sends is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
