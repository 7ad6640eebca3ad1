"""Model strings, provider settings from providers.toml and the environment, OLLAMA_HOST forms."""

from __future__ import annotations

import pytest

from slmkit.errors import InvalidParameterError, ProviderConfigError
from slmkit.providers import (
    PROVIDER_NAMES,
    ProviderRequest,
    configured_providers,
    get_provider,
    load_config,
    parse_model_string,
    provider_for_model,
)
from slmkit.providers.ollama import normalize_host


@pytest.mark.parametrize("model,expected", [
    ("github:Phi-3.5-mini-instruct", ("github", "Phi-3.5-mini-instruct")),
    ("azure:my-phi-deployment", ("azure", "my-phi-deployment")),
    ("azure:", ("azure", "")),
    ("nim:microsoft/phi-3.5-mini-instruct", ("nim", "microsoft/phi-3.5-mini-instruct")),
    ("ollama:phi3.5", ("ollama", "phi3.5")),
    ("ollama:phi3:medium", ("ollama", "phi3:medium")),
    ("OpenAI:gpt-4o-mini", ("openai", "gpt-4o-mini")),
    ("smollm2", None),
    ("smollm2:q8_0", None),
    ("phi3.5-mini:q4_k_m", None),
    ("/models/phi-3.gguf", None),
    ("C:/models/phi.gguf", None),
    ("openai://example.com/v1", None),
])
def test_parse_model_string(model, expected):
    assert parse_model_string(model) == expected


def test_provider_string_without_a_model_is_an_error():
    with pytest.raises(InvalidParameterError) as err:
        parse_model_string("github:")
    assert "github:Phi-3.5-mini-instruct" in err.value.message


def test_unknown_provider_name():
    with pytest.raises(InvalidParameterError) as err:
        get_provider("bedrock")
    assert "github" in err.value.message


def test_environment_over_providers_toml(tmp_path):
    (tmp_path / "providers.toml").write_text(
        '[github]\ntoken = "from-file"\norg = "acme"\n'
        '[azure]\nendpoint = "https://file.models.ai.azure.com/"\nkey = "file-key"\napi_version = "2025-04-01"\n'
        '[ollama]\nhost = "gpu-box"\n'
        '[openai]\nbase_url = "http://file:8000/v1"\n')
    config = load_config(tmp_path, env={"GITHUB_TOKEN": "from-env", "OPENAI_BASE_URL": "http://env:9000/v1",
                                        "AZURE_AI_CREDENTIAL": "", "NVIDIA_API_KEY": "nvapi-x"})
    github = config.settings("github")
    assert (github.api_key, github.org, github.sources["api_key"]) == ("from-env", "acme", "GITHUB_TOKEN")
    assert config.settings("azure").api_key == "file-key"  # an empty variable does not count
    assert config.path == tmp_path / "providers.toml"
    assert get_provider("github", config=config).base_url == "https://models.github.ai/orgs/acme/inference"
    azure = get_provider("azure", config=config)
    assert azure.base_url == "https://file.models.ai.azure.com" and azure.api_version == "2025-04-01"
    assert get_provider("ollama", config=config).base_url == "http://gpu-box:11434"
    assert get_provider("openai", config=config).base_url == "http://env:9000/v1"
    assert get_provider("nim", config=config).base_url == "https://integrate.api.nvidia.com/v1"
    assert "from-env" not in repr(config) and "file-key" not in repr(config)


def test_aliases_users_already_have(tmp_path):
    config = load_config(tmp_path, env={"GH_TOKEN": "gh", "AZURE_INFERENCE_CREDENTIAL": "k",
                                        "AZURE_INFERENCE_ENDPOINT": "https://x.services.ai.azure.com/models"})
    assert config.settings("github").api_key == "gh"
    call = get_provider("azure", config=config).build_call(
        ProviderRequest("Phi-3.5-mini-instruct", messages=[{"role": "user", "content": "hi"}]))
    assert call.url == "https://x.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview"


@pytest.mark.parametrize("text,needle", [
    ('[github]\ntokn = "x"\n', "unknown key 'tokn' under [github]"),
    ('[bedrock]\nkey = "x"\n', "unknown section [bedrock]"),
    ('[ollama]\nhost = 11434\n', "must be a string"),
    ("[github\n", "cannot read"),
])
def test_providers_toml_mistakes_are_named(tmp_path, text, needle):
    (tmp_path / "providers.toml").write_text(text)
    with pytest.raises(ProviderConfigError) as err:
        load_config(tmp_path, env={})
    assert needle in err.value.message and "providers.toml" in err.value.message


def test_configured_providers(tmp_path):
    rows = configured_providers(load_config(tmp_path, env={"NVIDIA_API_KEY": "nvapi-x", "OLLAMA_HOST": "0.0.0.0"}))
    assert [r[0] for r in rows] == list(PROVIDER_NAMES)
    table = {name: (ok, detail) for name, ok, detail in rows}
    assert table["github"] == (False, "set GITHUB_TOKEN (or [github] in providers.toml)")
    assert table["azure"][0] is False and "AZURE_AI_ENDPOINT" in table["azure"][1]
    assert table["nim"] == (True, "https://integrate.api.nvidia.com/v1 (key from NVIDIA_API_KEY)")
    assert table["ollama"] == (True, "http://127.0.0.1:11434")
    ok, detail = table["openai"]
    assert not ok and "OPENAI_API_KEY" in detail and "OPENAI_BASE_URL" in detail


def test_provider_for_model(tmp_path):
    config = load_config(tmp_path, env={"OLLAMA_HOST": "127.0.0.1:9999"})
    provider, model = provider_for_model("ollama:phi3.5", config=config)
    assert (provider.name, provider.base_url, model) == ("ollama", "http://127.0.0.1:9999", "phi3.5")
    assert provider_for_model("smollm2:q8_0", config=config) is None


@pytest.mark.parametrize("value,expected", [
    (None, "http://127.0.0.1:11434"),
    ("", "http://127.0.0.1:11434"),
    ("gpu-box", "http://gpu-box:11434"),
    ("gpu-box:8080", "http://gpu-box:8080"),
    (":11435", "http://127.0.0.1:11435"),
    ("0.0.0.0", "http://127.0.0.1:11434"),
    ("http://gpu-box:11434/", "http://gpu-box:11434"),
    ("https://ollama.example.com", "https://ollama.example.com:443"),
    ("http://example.com", "http://example.com:80"),
    ("https://example.com/ollama", "https://example.com:443/ollama"),
    ("[::1]:11434", "http://[::1]:11434"),
])
def test_ollama_host_forms(value, expected):
    assert normalize_host(value) == expected


def test_base_url_without_scheme_is_named(tmp_path):
    with pytest.raises(ProviderConfigError) as err:
        get_provider("openai", config=load_config(tmp_path, env={"OPENAI_BASE_URL": "localhost:8000/v1"}))
    assert "OPENAI_BASE_URL" in err.value.message and "http://" in err.value.message
