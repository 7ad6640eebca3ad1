"""GitHub Models: ``POST https://models.github.ai/inference/chat/completions`` with a GitHub token.

Model ids are ``publisher/name`` (``microsoft/Phi-3.5-mini-instruct``); a bare Phi name gets
``microsoft/``. With an organisation the requests go to ``/orgs/{org}/inference`` and are billed
to it. Rate limits answer 429 with ``x-ratelimit-timeremaining``, which the transport honours.
Only chat: GitHub Models has no text-completion API.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from slmkit.errors import MissingCredentialError
from slmkit.providers.base import WHY_NOT_OVER_HTTP, ProviderRequest, qualify_phi
from slmkit.providers.http import HttpTransport
from slmkit.providers.openai_compat import NOT_IN_OPENAI_API, OpenAICompatProvider

GITHUB_MODELS_URL = "https://models.github.ai"
LEGACY_HOST = "models.inference.ai.azure.com"  # the old endpoint, which took bare model names

PHI_MODELS = [
    "Phi-3.5-mini-instruct", "Phi-3.5-MoE-instruct", "Phi-3.5-vision-instruct",
    "Phi-3-mini-4k-instruct", "Phi-3-mini-128k-instruct", "Phi-3-small-8k-instruct",
    "Phi-3-small-128k-instruct", "Phi-3-medium-4k-instruct", "Phi-3-medium-128k-instruct",
]


class GitHubModelsProvider(OpenAICompatProvider):
    name = "github"
    credential_variable = "GITHUB_TOKEN"
    base_url_variable = "GITHUB_MODELS_BASE_URL"
    completions_path = None
    auth_help = ("GitHub Models needs a token with the models:read permission (a fine-grained personal "
                 "access token, or `gh auth token`)")

    def __init__(self, *, token: str | None, base_url: str | None = None, org: str | None = None,
                 transport: HttpTransport | None = None):
        if not token:
            raise MissingCredentialError(
                "github", "GITHUB_TOKEN",
                "the github provider needs a GitHub token: set GITHUB_TOKEN (for example "
                "`export GITHUB_TOKEN=$(gh auth token)`; a fine-grained token needs the models:read "
                "permission), or token under [github] in providers.toml")
        if not base_url:
            base_url = (f"{GITHUB_MODELS_URL}/orgs/{quote(org, safe='')}/inference" if org
                        else f"{GITHUB_MODELS_URL}/inference")
        super().__init__(base_url=base_url, api_key=token, transport=transport)
        self.org = org

    def unsupported(self) -> dict[str, str]:
        return {**WHY_NOT_OVER_HTTP, **NOT_IN_OPENAI_API,
                "logit_bias": "GitHub Models does not document logit_bias for its models"}

    def wire_model(self, model: str) -> str:
        if urlsplit(self.base_url).hostname == LEGACY_HOST:
            return model
        return qualify_phi(model)

    def headers(self, request: ProviderRequest) -> dict[str, str]:
        return {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                "Authorization": f"Bearer {self.api_key}"}

    def not_found_help(self) -> str:
        return ("GitHub Models ids look like microsoft/Phi-3.5-mini-instruct; see "
                "https://github.com/marketplace?type=models")

    def known_models(self) -> list[str]:
        return list(PHI_MODELS)
