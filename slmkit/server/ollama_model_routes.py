"""The Ollama API's model management: ``/api/create``, ``/api/copy``, ``/api/delete``,
``/api/push`` and ``/api/blobs/:digest`` (ollama/ollama ``docs/api.md``).

``ollama create`` from a local file uploads the GGUF as a blob (``HEAD`` to ask whether the
server has it, ``POST`` to send it), then names it in ``files``. Models are built FROM a store
name or such an uploaded file: the server never reads paths on its own disk that a client names
(the same rule as ``slm serve --model PATH``).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, StrictStr

from slmkit.errors import InvalidParameterError, ModelNotFoundError, UnsupportedOperationError
from slmkit.server.context import ServerContext, ctx_of
from slmkit.server.http import parse_model, read_json
from slmkit.server.openapi import request_body
from slmkit.server.ollama_protocol import ModelRequest, check_stream, require_model
from slmkit.server.ollama_routes import NDJSON, ndjson_line
from slmkit.store.modelfile import Modelfile, build, parse
from slmkit.store.store import looks_like_path

router = APIRouter()


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Ollama (Go's JSON decoding) ignores unknown fields


class CreateRequest(_Body):
    model: StrictStr | None = None
    name: StrictStr | None = None  # the field's name before Ollama 0.5
    from_: StrictStr | None = None
    files: dict[str, StrictStr] | None = None
    adapters: dict[str, StrictStr] | None = None
    template: StrictStr | None = None
    system: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    license: StrictStr | list[StrictStr] | None = None
    quantize: StrictStr | None = None
    modelfile: StrictStr | None = None  # the pre-0.5 API sent the Modelfile's text
    stream: Any = None

    def target(self) -> str:
        return require_model(self.model or self.name or "")

    def to_modelfile(self, ctx: ServerContext) -> Modelfile:
        if self.adapters:
            raise InvalidParameterError("adapters", "LoRA adapters are not supported by slmkit")
        if self.modelfile is None:
            return build(self._base(ctx), parameters=self.parameters, template=self.template, system=self.system,
                         messages=self.messages, license=self.license)
        found = parse(self.modelfile)
        if found.base.startswith("@"):  # the pre-0.5 `ollama create` named an uploaded blob so
            found.base = str(self._blob(ctx, found.base[1:]))
        elif looks_like_path(found.base):
            raise InvalidParameterError("modelfile", f"FROM {found.base}: this server does not read files a "
                                        "client names on its disk; upload the file (POST /api/blobs/:digest, as "
                                        "`ollama create` does) or build FROM a model name")
        return found

    def _blob(self, ctx: ServerContext, digest: str):
        path = ctx.manager.store.blob_path(digest)
        if not path.is_file():
            raise ModelNotFoundError(f"blob {digest} was never uploaded; POST it to /api/blobs/:digest first")
        return path

    def _base(self, ctx: ServerContext) -> str:
        gguf = {name: digest for name, digest in (self.files or {}).items() if name.endswith(".gguf")}
        if self.files and (len(gguf) != 1 or len(self.files) != 1):
            raise InvalidParameterError("files", "give exactly one .gguf file (safetensors folders: `slm import` "
                                        "on the server's machine)")
        if gguf:
            if self.from_:
                raise InvalidParameterError("from", "give either from or files, not both")
            return str(self._blob(ctx, next(iter(gguf.values()))))
        if not self.from_:
            raise InvalidParameterError("from", "say which model to build on: from (a model name) or files "
                                        "(an uploaded .gguf)")
        return self.from_


def _create_request(data: Any) -> CreateRequest:
    if isinstance(data, dict) and "from" in data:
        data = {**data, "from_": data.pop("from")}
    return parse_model(CreateRequest, data)


@router.post("/api/create", openapi_extra=request_body(CreateRequest))
async def create(request: Request):
    ctx = ctx_of(request)
    req = _create_request(await read_json(request))
    check_stream(req.stream)
    name = req.target()
    modelfile = req.to_modelfile(ctx)
    store = ctx.manager.store

    def work() -> list[str]:
        manifest = store.create(name, modelfile)
        done = [f"created {manifest.name}:{manifest.default_variant}"]
        if req.quantize:
            store.quantize(f"{manifest.name}:{manifest.default_variant}", req.quantize)
            manifest = store.manifest(manifest.name)
            manifest.default_variant = req.quantize.lower()
            manifest.save(store.folder(manifest.name))
            done.append(f"quantized to {req.quantize.lower()}")
        return done

    if req.stream is False:
        await asyncio.to_thread(work)
        return {"status": "success"}

    async def lines() -> AsyncIterator[str]:
        yield ndjson_line({"status": f"using {modelfile.base}"})
        try:
            for status in await asyncio.to_thread(work):
                yield ndjson_line({"status": status})
        except Exception as exc:  # noqa: BLE001 - after the 200 went out, errors are a line
            yield ndjson_line({"error": getattr(exc, "message", f"{type(exc).__name__}: {exc}")})
            return
        yield ndjson_line({"status": "writing manifest"})
        yield ndjson_line({"status": "success"})

    return StreamingResponse(lines(), media_type=NDJSON)


class CopyRequest(_Body):
    source: StrictStr
    destination: StrictStr


@router.post("/api/copy", openapi_extra=request_body(CopyRequest))
async def copy(request: Request):
    ctx = ctx_of(request)
    req = parse_model(CopyRequest, await read_json(request))
    await asyncio.to_thread(ctx.manager.store.copy, require_model(req.source), require_model(req.destination))
    return Response(status_code=200)


class DeleteRequest(_Body):
    model: StrictStr | None = None
    name: StrictStr | None = None


@router.delete("/api/delete", openapi_extra=request_body(DeleteRequest))
async def delete(request: Request):
    ctx = ctx_of(request)
    req = parse_model(DeleteRequest, await read_json(request))
    reference = require_model(req.model or req.name or "")
    if looks_like_path(reference):
        raise InvalidParameterError("model", "name a model in the store, not a file")
    removal = await asyncio.to_thread(ctx.manager.store.remove, reference)
    for removed in removal.removed:  # a deleted model's weights stop being served
        served = ctx.manager.loaded.get(removed)
        if served is not None:
            if served.active_requests:
                served.keep_alive = 0  # the idle reaper unloads it once its requests finish
            else:
                await asyncio.to_thread(ctx.manager.unload, removed)
    return Response(status_code=200)


@router.post("/api/push", openapi_extra=request_body(ModelRequest))
async def push(request: Request):
    """A well-formed push is a 501 (nothing to push to); a malformed one a 400, like any route."""
    parse_model(ModelRequest, await read_json(request)).reference()
    raise UnsupportedOperationError(
        "slmkit has no model registry to push to; share the GGUF file (`slm show MODEL` prints its path) "
        "with `slm show --modelfile MODEL`, which `slm create` or `ollama create` reads back")


@router.head("/api/blobs/{digest}")
async def has_blob(digest: str, request: Request):
    try:
        path = ctx_of(request).manager.store.blob_path(digest)
    except InvalidParameterError:  # a HEAD answer has no body to say why: not a digest, so not here
        return Response(status_code=404)
    return Response(status_code=200 if path.is_file() else 404)


@router.post("/api/blobs/{digest}")
async def upload_blob(digest: str, request: Request):
    """The body streams to disk while its sha256 is checked against the digest it was sent as."""
    path = ctx_of(request).manager.store.blob_path(digest)
    if path.is_file():
        return Response(status_code=200)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    hasher = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            async for chunk in request.stream():
                hasher.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise InvalidParameterError("digest", f"the body's sha256 is {hasher.hexdigest()}, not the {digest} "
                                        "it was sent as")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return Response(status_code=201)
