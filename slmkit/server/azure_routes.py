"""Azure AI Inference: ``POST /chat/completions?api-version=…`` and ``GET /info``.

The body is OpenAI's chat body plus Azure's conventions: an ``api-version`` query parameter, the
``api-key`` header (handled with the other keys), and the ``extra-parameters`` header deciding
what happens to fields the API does not define: ``error`` (the default: 400), ``drop`` (ignored)
or ``pass-through`` (handed to the model: here, our extra sampling fields are honoured and
anything else is ignored).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from slmkit.errors import InvalidParameterError, InvalidRequestError
from slmkit.server.openapi import request_body
from slmkit.server.context import ctx_of
from slmkit.server.http import parse_model, read_json
from slmkit.server.openai_routes import run_chat
from slmkit.server.protocol import ChatCompletionRequest

router = APIRouter()

API_VERSIONS = {"2024-04-01-preview", "2024-05-01-preview", "2024-08-01-preview", "2025-04-01", "2025-05-01"}
# Fields of the Azure AI Inference chat body; anything else is an "extra parameter".
AZURE_FIELDS = {
    "messages", "model", "frequency_penalty", "presence_penalty", "temperature", "top_p", "max_tokens",
    "response_format", "stop", "stream", "seed", "tools", "tool_choice", "modalities", "n", "user",
    "stream_options", "logprobs", "top_logprobs", "logit_bias", "max_completion_tokens",
}


def _check_version(request: Request) -> None:
    version = request.query_params.get("api-version")
    if version is None:
        raise InvalidParameterError("api-version", "the api-version query parameter is required "
                                    f"(e.g. ?api-version=2024-05-01-preview); supported: {sorted(API_VERSIONS)}")
    if version not in API_VERSIONS:
        raise InvalidParameterError("api-version", f"unsupported version {version!r}; supported: {sorted(API_VERSIONS)}")


@router.post("/chat/completions", openapi_extra={**request_body(ChatCompletionRequest), "parameters": [
    {"name": "api-version", "in": "query", "required": True,
     "schema": {"type": "string", "enum": sorted(API_VERSIONS)}}]})
async def chat_completions(request: Request):
    _check_version(request)
    ctx = ctx_of(request)
    data = await read_json(request)
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    mode = (request.headers.get("extra-parameters") or request.headers.get("unknown-parameters") or "error").lower()
    extra = sorted(set(data) - AZURE_FIELDS)
    if mode == "error" and extra:
        raise InvalidParameterError(extra[0], "extra parameter not allowed; send the header "
                                    "`extra-parameters: pass-through` or `drop` to allow it")
    if mode == "drop":
        data = {k: v for k, v in data.items() if k in AZURE_FIELDS}
    elif mode in ("pass-through", "pass_through", "allow"):
        known = set(ChatCompletionRequest.model_fields)
        data = {k: v for k, v in data.items() if k in known}
    elif mode != "error":
        raise InvalidParameterError("extra-parameters", f"unknown mode {mode!r}; use error, drop or pass-through")
    if "model" not in data:
        default = request.headers.get("azureml-model-deployment") or ctx.default_model()
        data = {**data, "model": default}
    return await run_chat(ctx, parse_model(ChatCompletionRequest, data), request)


@router.get("/info")
async def info(request: Request):
    _check_version(request)
    ctx = ctx_of(request)
    served = await ctx.manager.get(ctx.default_model())
    return {"model_name": served.name, "model_type": "chat-completion", "model_provider_name": "slmkit"}
