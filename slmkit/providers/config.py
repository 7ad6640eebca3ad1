"""Provider settings: the environment each cloud's users already have, over ``providers.toml``.

``providers.toml`` lives in the slmkit home (``SLMKIT_HOME``, default ``~/.slmkit``)::

    [github]
    token = "github_pat_..."          # or GITHUB_TOKEN / GH_TOKEN
    org = "my-org"                    # optional: bill an organisation (GITHUB_MODELS_ORG)

    [azure]
    endpoint = "https://my-phi.eastus2.models.ai.azure.com"   # AZURE_AI_ENDPOINT
    key = "..."                                               # AZURE_AI_CREDENTIAL

    [nim]
    api_key = "nvapi-..."             # NVIDIA_API_KEY
    base_url = "http://gpu-box:8000/v1"   # NIM_BASE_URL: a self-hosted NIM

    [ollama]
    host = "gpu-box:11434"            # OLLAMA_HOST

    [openai]
    base_url = "http://127.0.0.1:8000/v1"   # OPENAI_BASE_URL: vLLM, llama-server, LM Studio, slm serve
    api_key = "..."                   # OPENAI_API_KEY

Every provider also takes ``base_url`` and ``api_key`` under those names. A variable set in the
environment wins over the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from slmkit.errors import ProviderConfigError

PROVIDERS_FILE = "providers.toml"

# provider -> setting -> environment variables, first found wins (the first is the one to name).
ENV_VARS: dict[str, dict[str, tuple[str, ...]]] = {
    "github": {"api_key": ("GITHUB_TOKEN", "GH_TOKEN"), "base_url": ("GITHUB_MODELS_BASE_URL",),
               "org": ("GITHUB_MODELS_ORG",)},
    "azure": {"base_url": ("AZURE_AI_ENDPOINT", "AZURE_INFERENCE_ENDPOINT"),
              "api_key": ("AZURE_AI_CREDENTIAL", "AZURE_INFERENCE_CREDENTIAL"),
              "api_version": ("AZURE_AI_API_VERSION",)},
    "nim": {"api_key": ("NVIDIA_API_KEY",), "base_url": ("NIM_BASE_URL",)},
    "ollama": {"base_url": ("OLLAMA_HOST",), "api_key": ("OLLAMA_API_KEY",)},
    "openai": {"base_url": ("OPENAI_BASE_URL",), "api_key": ("OPENAI_API_KEY",)},
}

# provider -> key in providers.toml -> setting. The usual names of each cloud are aliases.
TOML_KEYS: dict[str, dict[str, str]] = {
    "github": {"token": "api_key", "api_key": "api_key", "base_url": "base_url", "org": "org"},
    "azure": {"endpoint": "base_url", "base_url": "base_url", "key": "api_key", "credential": "api_key",
              "api_key": "api_key", "api_version": "api_version"},
    "nim": {"api_key": "api_key", "base_url": "base_url"},
    "ollama": {"host": "base_url", "base_url": "base_url", "api_key": "api_key"},
    "openai": {"base_url": "base_url", "api_key": "api_key"},
}


@dataclass
class ProviderSettings:
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    org: str | None = None  # github
    api_version: str | None = None  # azure
    sources: dict[str, str] = field(default_factory=dict)  # setting -> "GITHUB_TOKEN" / "providers.toml"


@dataclass
class ProvidersConfig:
    providers: dict[str, ProviderSettings] = field(default_factory=dict)
    path: Path | None = None  # the providers.toml that was read, if there was one

    def settings(self, name: str) -> ProviderSettings:
        return self.providers.get(name) or ProviderSettings()


def providers_file(home: Path | None = None) -> Path:
    if home is None:
        from slmkit.store.store import default_home

        home = default_home()
    return Path(home) / PROVIDERS_FILE


def load_config(home: Path | None = None, env: Mapping[str, str] | None = None) -> ProvidersConfig:
    """Settings of every provider: ``providers.toml`` in `home`, then the environment over it."""
    env = os.environ if env is None else env
    path = providers_file(home)
    from_file = _read_file(path) if path.is_file() else {}
    config = ProvidersConfig(path=path if path.is_file() else None)
    for name, variables in ENV_VARS.items():
        settings = ProviderSettings()
        for setting, value in from_file.get(name, {}).items():
            setattr(settings, setting, value)
            settings.sources[setting] = PROVIDERS_FILE
        for setting, names in variables.items():
            for variable in names:
                value = (env.get(variable) or "").strip()
                if value:
                    setattr(settings, setting, value)
                    settings.sources[setting] = variable
                    break
        config.providers[name] = settings
    return config


def _read_file(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProviderConfigError(f"cannot read {path}: {exc}") from exc
    settings: dict[str, dict[str, str]] = {}
    for section, table in data.items():
        keys = TOML_KEYS.get(section)
        if keys is None or not isinstance(table, dict):
            raise ProviderConfigError(f"{path}: unknown section [{section}]; the providers are "
                                      f"{', '.join(f'[{n}]' for n in TOML_KEYS)}")
        for key, value in table.items():
            if key not in keys:
                raise ProviderConfigError(f"{path}: unknown key {key!r} under [{section}]; known: "
                                          f"{', '.join(keys)}")
            if not isinstance(value, str):
                raise ProviderConfigError(f"{path}: [{section}] {key} must be a string, got {value!r}")
            if value.strip():
                settings.setdefault(section, {})[keys[key]] = value.strip()
    return settings
