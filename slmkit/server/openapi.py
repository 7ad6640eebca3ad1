"""The server's OpenAPI schema, with the real request body of every route.

Routes read their JSON themselves (`http.read_json` + `parse_model`: one error message style
for the three APIs), so FastAPI cannot see their bodies; each route names its pydantic model
with `request_body(Model)` and `install` puts those models into the schema. Error responses
are documented in each API's own shape, so a fuzzer can check every answer against them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

_MODELS: dict[str, type[BaseModel]] = {}
_REF = "#/components/schemas/{model}"

ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "OpenAIError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
    },
    "OllamaError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "AnthropicError": {
        "type": "object", "required": ["type", "error"],
        "properties": {"type": {"const": "error"}, "error": {
            "type": "object", "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}},
    },
    "AzureError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "target": {"type": ["string", "null"]}}}},
    },
}
_ERROR_STATUSES = ("400", "401", "404", "413", "429", "500", "501", "502", "503", "504")


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body is `model`."""
    _MODELS[model.__name__] = model
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}}}


def error_schema_for(path: str) -> str:
    from slmkit.server.http import api_of

    return {"ollama": "OllamaError", "azure": "AzureError", "anthropic": "AnthropicError"}.get(api_of(path),
                                                                                             "OpenAIError")


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description="OpenAI (chat, completions, responses), Anthropic Messages, Ollama and Azure AI Inference APIs of slmkit")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if _MODELS:
            _, defs = models_json_schema([(m, "validation") for m in _MODELS.values()], ref_template=_REF)
            components.update(defs.get("$defs", {}))
        components.update(ERROR_SCHEMAS)
        for path, operations in schema.get("paths", {}).items():
            ref = {"$ref": _REF.format(model=error_schema_for(path))}
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)  # FastAPI's own validation shape: ours are 400s
                for status in _ERROR_STATUSES:
                    responses.setdefault(status, {"description": "error",
                                                  "content": {"application/json": {"schema": ref}}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
