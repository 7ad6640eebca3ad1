"""The FastAPI application: routes of the three APIs, auth, limits, errors, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from slmkit import __version__
from slmkit.errors import (
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    SlmkitError,
)
from slmkit.server import playground
from slmkit.server.config import ServerConfig
from slmkit.server.context import ServerContext
from slmkit.server.http import api_of, error_response
from slmkit.server.metrics import Metrics
from slmkit.server.models import ModelManager
from slmkit.server.openapi import install as install_openapi

log = logging.getLogger("slmkit.server")
access_log = logging.getLogger("slmkit.access")

OPEN_PATHS = {"/health"}  # reachable without an API key (probes); everything else needs one when keys are set
BLOB_PATH = "/api/blobs/"


def create_app(config: ServerConfig) -> FastAPI:
    manager = ModelManager(config)
    ctx = ServerContext(config=config, manager=manager, metrics=Metrics(manager))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for name in config.models:  # a provider model is checked (credentials) now, not on first use
            try:
                await manager.get(name, remote_ok=True)
            except SlmkitError as exc:  # the others are served; a request for this one says why
                log.error("could not load %s: %s", name, exc.message)
        reaper = asyncio.create_task(_unload_idle_models(manager))
        try:
            yield
        finally:
            reaper.cancel()
            # uvicorn has already waited for open responses (running streams) to finish.
            await asyncio.to_thread(manager.close, drain=True)

    app = FastAPI(title="slmkit", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    install_openapi(app)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        try:
            _check_auth(request, config)
            _check_body_size(request, config)
            response = await call_next(request)
        except SlmkitError as exc:
            response = error_response(path, exc)
        route = request.scope.get("route")
        route_name = getattr(route, "path", "unmatched")
        ctx.metrics.requests.labels(route_name, str(response.status_code)).inc()
        ctx.metrics.duration.labels(route_name).observe(time.perf_counter() - started)
        access_log.info('%s "%s %s" %d %.1fms', request.client.host if request.client else "-",
                        request.method, path, response.status_code, 1000 * (time.perf_counter() - started))
        return response

    @app.exception_handler(SlmkitError)
    async def slmkit_error(request: Request, exc: SlmkitError):
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p not in ("body", "query"))
        return error_response(request.url.path, InvalidRequestError(f"{param}: {first['msg']}", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            err: SlmkitError = ModelNotFoundError(f"no route {request.method} {request.url.path}")
            err.code, err.param = "not_found", None
        else:
            err = InvalidRequestError(str(exc.detail))
            err.status_code = exc.status_code
        return error_response(request.url.path, err)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(request.url.path, SlmkitError(f"internal error: {type(exc).__name__}: {exc}"))

    @app.get("/health")
    async def health():
        dead = [name for name, m in manager.loaded.items() if not m.engine.loop.alive]
        if dead:
            return JSONResponse({"status": "error", "dead_engines": dead}, status_code=503)
        return {"status": "ok", "models": sorted(manager.loaded)}

    @app.get("/metrics")
    async def metrics():
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")

    if not config.playground:  # the playground's page is the answer at / otherwise
        @app.get("/")
        async def root():
            return root_response()

        @app.head("/")
        async def root_probe():  # some clients probe with HEAD; Starlette sends no body for it
            return root_response()

    from slmkit.server import (
        anthropic_routes,
        azure_routes,
        ollama_model_routes,
        ollama_routes,
        openai_routes,
        responses_routes,
    )

    playground.install(app, config.playground)
    app.include_router(openai_routes.router)
    app.include_router(responses_routes.router)
    app.include_router(anthropic_routes.router)
    app.include_router(ollama_routes.router)
    app.include_router(ollama_model_routes.router)
    app.include_router(azure_routes.router)
    if config.cors_origins:
        # Added last, so it is the outermost layer: preflights are answered before the key check.
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["Retry-After"])
    return app


def root_response() -> Response:
    """What ``GET /`` answers without the playground: Ollama's habit (clients probe it to see a
    server is up)."""
    return PlainTextResponse("slmkit is running")


def _check_auth(request: Request, config: ServerConfig) -> None:
    path = request.url.path
    if (not config.api_keys or path in OPEN_PATHS or request.method == "OPTIONS"
            or playground.is_public(path, config.playground)):
        return
    key = presented_key(request)
    if key is None:
        raise AuthenticationError("missing API key: send `Authorization: Bearer <key>`, an `api-key` or an "
                                  "`x-api-key` header")
    if not key_matches(key, config.api_keys):
        raise AuthenticationError("invalid API key")


def presented_key(request: Request) -> str | None:
    """The key a client sent: OpenAI's bearer token, Azure's ``api-key``, Anthropic's ``x-api-key``."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("api-key") or request.headers.get("x-api-key")


def key_matches(key: str, keys: set[str]) -> bool:
    """Compared in constant time against every key (no early exit), so timing tells nothing."""
    presented = key.encode("utf-8", "surrogatepass")
    found = False
    for candidate in keys:
        found |= hmac.compare_digest(presented, candidate.encode("utf-8", "surrogatepass"))
    return found


def _check_body_size(request: Request, config: ServerConfig) -> None:
    if request.url.path.startswith(BLOB_PATH):
        return  # model files: streamed to disk, not read into memory
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
        raise PayloadTooLargeError(
            f"the request body is {int(length)} bytes; this server accepts at most {config.max_body_bytes}"
        )


async def _unload_idle_models(manager: ModelManager) -> None:
    while True:
        await asyncio.sleep(1.0)
        try:
            await asyncio.to_thread(manager.unload_idle)
        except Exception:  # noqa: BLE001 - the reaper must keep running
            log.exception("unloading idle models failed")


__all__ = ["create_app", "api_of"]
