"""Azure AI Model Inference (serverless and managed endpoints, Azure AI Services ``/models``).

``POST {endpoint}/chat/completions?api-version=2024-05-01-preview`` with the key both as
``api-key`` and as a Bearer token, as the azure-ai-inference SDK sends it. The API answers 400
to fields it does not know unless the request says ``extra-parameters: pass-through``, which is
sent exactly when `ProviderRequest.extra_body` has fields. ``stream_options`` is not sent for the
same reason (the service puts usage in its last chunk). Only chat: no text-completion API.
"""

from __future__ import annotations

from urllib.parse import quote

from slmkit.errors import MissingCredentialError
from slmkit.providers.base import WHY_NOT_OVER_HTTP, ProviderRequest, join_url
from slmkit.providers.github_models import PHI_MODELS
from slmkit.providers.http import HttpTransport
from slmkit.providers.openai_compat import NOT_IN_OPENAI_API, OpenAICompatProvider

DEFAULT_API_VERSION = "2024-05-01-preview"
PASS_THROUGH_HINT = "; if the deployment accepts it, send it in ProviderRequest.extra_body (sent with " \
                    "extra-parameters: pass-through)"


class AzureInferenceProvider(OpenAICompatProvider):
    name = "azure"
    credential_variable = "AZURE_AI_CREDENTIAL"
    base_url_variable = "AZURE_AI_ENDPOINT"
    completions_path = None
    send_stream_options = False
    auth_help = "use a key of the endpoint in AZURE_AI_ENDPOINT"

    def __init__(self, *, endpoint: str | None, key: str | None, api_version: str | None = None,
                 transport: HttpTransport | None = None):
        if not endpoint:
            raise MissingCredentialError(
                "azure", "AZURE_AI_ENDPOINT",
                "the azure provider needs the endpoint of your deployment: set AZURE_AI_ENDPOINT (e.g. "
                "https://<name>.<region>.models.ai.azure.com or https://<resource>.services.ai.azure.com/models), "
                "or endpoint under [azure] in providers.toml")
        if not key:
            raise MissingCredentialError(
                "azure", "AZURE_AI_CREDENTIAL",
                "the azure provider needs the key of your endpoint: set AZURE_AI_CREDENTIAL, or key under "
                "[azure] in providers.toml")
        super().__init__(base_url=endpoint, api_key=key, transport=transport)
        self.api_version = api_version or DEFAULT_API_VERSION

    def unsupported(self) -> dict[str, str]:
        refused = {**NOT_IN_OPENAI_API, "logit_bias": "Azure AI Inference has no logit_bias"}
        return {**WHY_NOT_OVER_HTTP, **{name: why + PASS_THROUGH_HINT for name, why in refused.items()}}

    def url(self, path: str) -> str:
        return join_url(self.base_url, path) + f"?api-version={quote(self.api_version, safe='')}"

    def headers(self, request: ProviderRequest) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "api-key": self.api_key or "",
                   "Authorization": f"Bearer {self.api_key}"}
        if request.extra_body:
            headers["extra-parameters"] = "pass-through"
        return headers

    def not_found_help(self) -> str:
        return "azure:<name> is the deployment or model name the endpoint serves"

    def known_models(self) -> list[str]:
        return list(PHI_MODELS)
