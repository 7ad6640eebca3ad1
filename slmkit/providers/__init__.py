"""Remote providers: GitHub Models, Azure AI Inference, NVIDIA NIM, Ollama and any
OpenAI-compatible server, each an engine over HTTP (`Provider`)."""

from slmkit.providers.base import HttpProvider, Provider, ProviderRequest
from slmkit.providers.config import ProviderSettings, ProvidersConfig, load_config
from slmkit.providers.http import HttpTransport, RetryPolicy, Timeouts, shared_transport
from slmkit.providers.registry import (
    PROVIDER_NAMES,
    configured_providers,
    get_provider,
    parse_model_string,
    provider_for_model,
)

__all__ = [
    "PROVIDER_NAMES", "HttpProvider", "HttpTransport", "Provider", "ProviderRequest", "ProviderSettings",
    "ProvidersConfig", "RetryPolicy", "Timeouts", "configured_providers", "get_provider", "load_config",
    "parse_model_string", "provider_for_model", "shared_transport",
]
