"""From a model string (``github:Phi-3.5-mini-instruct``) to a ready provider."""

from __future__ import annotations

from slmkit.errors import InvalidParameterError, MissingCredentialError
from slmkit.providers.azure_inference import AzureInferenceProvider
from slmkit.providers.base import HttpProvider, Provider
from slmkit.providers.config import PROVIDERS_FILE, ProvidersConfig, load_config
from slmkit.providers.github_models import GitHubModelsProvider
from slmkit.providers.http import HttpTransport
from slmkit.providers.nim import NimProvider
from slmkit.providers.ollama import OllamaProvider
from slmkit.providers.openai_compat import OpenAIProvider

PROVIDER_NAMES = ("github", "azure", "nim", "ollama", "openai")

EXAMPLES = {"github": "github:Phi-3.5-mini-instruct", "azure": "azure:Phi-3.5-mini-instruct",
            "nim": "nim:microsoft/phi-3.5-mini-instruct", "ollama": "ollama:phi3.5", "openai": "openai:<model>"}
# What else makes a provider usable, besides the variable a MissingCredentialError names.
ALTERNATIVES = {"openai": "OPENAI_BASE_URL (an OpenAI-compatible server)", "nim": "NIM_BASE_URL (a self-hosted NIM)"}


def parse_model_string(model: str) -> tuple[str, str] | None:
    """``"github:Phi-3.5-mini-instruct"`` -> ``("github", "Phi-3.5-mini-instruct")``; None when
    `model` is not a provider string (``"smollm2"``, ``"smollm2:q8_0"``, a path). Only the text
    before the first ``:`` counts, so ``ollama:phi3:medium`` keeps its tag. ``azure:`` alone
    means the endpoint's only model."""
    if not isinstance(model, str):
        return None
    prefix, sep, rest = model.partition(":")
    name = prefix.strip().lower()
    if not sep or name not in PROVIDER_NAMES or rest.startswith("//"):  # "openai://..." is a URL
        return None
    rest = rest.strip()
    if not rest and name != "azure":
        raise InvalidParameterError("model", f"{model!r} names no model; e.g. {EXAMPLES[name]}")
    return name, rest


def get_provider(name: str, *, config: ProvidersConfig | None = None,
                 transport: HttpTransport | None = None) -> HttpProvider:
    """The provider `name`, configured from `config` (default: `load_config()`). Raises
    `MissingCredentialError` naming the variable to set when a credential or endpoint is missing."""
    if name not in PROVIDER_NAMES:
        raise InvalidParameterError("provider", f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")
    config = config if config is not None else load_config()
    s = config.settings(name)
    if name == "github":
        return GitHubModelsProvider(token=s.api_key, base_url=s.base_url, org=s.org, transport=transport)
    if name == "azure":
        return AzureInferenceProvider(endpoint=s.base_url, key=s.api_key, api_version=s.api_version,
                                      transport=transport)
    if name == "nim":
        return NimProvider(api_key=s.api_key, base_url=s.base_url, transport=transport)
    if name == "ollama":
        return OllamaProvider(host=s.base_url, api_key=s.api_key, transport=transport)
    return OpenAIProvider(base_url=s.base_url, api_key=s.api_key, transport=transport)


def provider_for_model(model: str, *, config: ProvidersConfig | None = None,
                       transport: HttpTransport | None = None) -> tuple[HttpProvider, str] | None:
    """(provider, its model id) for a provider model string; None for a local model name."""
    parsed = parse_model_string(model)
    if parsed is None:
        return None
    return get_provider(parsed[0], config=config, transport=transport), parsed[1]


def configured_providers(config: ProvidersConfig | None = None) -> list[tuple[str, bool, str]]:
    """``(name, configured, detail)`` for every provider, without touching the network: detail
    is the base URL (and where the credential comes from), or what to set."""
    config = config if config is not None else load_config()
    rows: list[tuple[str, bool, str]] = []
    for name in PROVIDER_NAMES:
        try:
            provider = get_provider(name, config=config)
        except MissingCredentialError as exc:
            alternative = f" or {ALTERNATIVES[name]}" if name in ALTERNATIVES else ""
            rows.append((name, False, f"set {exc.variable}{alternative} (or [{name}] in {PROVIDERS_FILE})"))
            continue
        source = config.settings(name).sources.get("api_key")
        detail = provider.base_url + (f" (key from {source})" if source else "")
        rows.append((name, True, detail))
    return rows


__all__ = ["PROVIDER_NAMES", "Provider", "ProvidersConfig", "configured_providers", "get_provider",
           "load_config", "parse_model_string", "provider_for_model"]
