"""NVIDIA NIM: the hosted API at build.nvidia.com (``https://integrate.api.nvidia.com/v1``, an
``nvapi-`` key in ``NVIDIA_API_KEY``) or a self-hosted NIM container at ``NIM_BASE_URL`` (no key
needed). OpenAI-shaped, chat and completions; ids are ``microsoft/phi-3.5-mini-instruct`` (a bare
Phi name gets ``microsoft/`` and is lower-cased, as NIM spells its ids).
"""

from __future__ import annotations

from slmkit.errors import MissingCredentialError
from slmkit.providers.base import WHY_NOT_OVER_HTTP, qualify_phi
from slmkit.providers.http import HttpTransport
from slmkit.providers.openai_compat import NOT_IN_OPENAI_API, OpenAICompatProvider

NIM_HOSTED_URL = "https://integrate.api.nvidia.com/v1"

PHI_MODELS = [
    "microsoft/phi-3.5-mini-instruct", "microsoft/phi-3.5-moe-instruct", "microsoft/phi-3.5-vision-instruct",
    "microsoft/phi-3-mini-4k-instruct", "microsoft/phi-3-mini-128k-instruct",
    "microsoft/phi-3-small-8k-instruct", "microsoft/phi-3-small-128k-instruct",
    "microsoft/phi-3-medium-4k-instruct", "microsoft/phi-3-medium-128k-instruct",
    "microsoft/phi-3-vision-128k-instruct",
]


class NimProvider(OpenAICompatProvider):
    name = "nim"
    credential_variable = "NVIDIA_API_KEY"
    base_url_variable = "NIM_BASE_URL"
    auth_help = "keys for the hosted API start with nvapi- (create one at build.nvidia.com)"

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 transport: HttpTransport | None = None):
        if not base_url and not api_key:
            raise MissingCredentialError(
                "nim", "NVIDIA_API_KEY",
                "the nim provider needs an API key for the hosted NVIDIA API: set NVIDIA_API_KEY (an nvapi- key "
                "from build.nvidia.com), or set NIM_BASE_URL to a self-hosted NIM (http://host:8000/v1); "
                "or api_key / base_url under [nim] in providers.toml")
        super().__init__(base_url=base_url or NIM_HOSTED_URL, api_key=api_key, transport=transport)

    def unsupported(self) -> dict[str, str]:
        return {**WHY_NOT_OVER_HTTP, **NOT_IN_OPENAI_API,
                "logit_bias": "the NVIDIA API does not document logit_bias for its models"}

    def wire_model(self, model: str) -> str:
        return qualify_phi(model, lowercase=True)

    def not_found_help(self) -> str:
        return "NIM ids look like microsoft/phi-3.5-mini-instruct"

    def known_models(self) -> list[str]:
        return list(PHI_MODELS)
