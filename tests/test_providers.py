"""Providers against fake servers that speak each wire format (tests/fake_providers.py): what we
send, what we parse, which parameters each provider refuses, and the errors it answers with."""

from __future__ import annotations

import pytest
from fake_providers import (  # noqa: F401  (fixtures)
    CHAT,
    KEY,
    KINDS,
    MODEL,
    PROMPT_TOKENS,
    REPLY,
    WIRE_MODEL,
    FakeProvider,
    Reply,
    arun,
    chat,
    fake,
    provider_for,
    run,
    transport,
    waits,
)

from slmkit.errors import (
    InvalidParameterError,
    MissingCredentialError,
    ProviderAuthError,
    ProviderNotFoundError,
    ProviderRequestError,
)
from slmkit.providers import ProviderRequest, ProviderSettings, ProvidersConfig, get_provider
from slmkit.types import SamplingParams


# -- chat, parsing, what is sent ----------------------------------------------------------
@pytest.mark.parametrize("collect", [run, arun], ids=["sync", "async"])
def test_chat_streams_deltas_then_usage_and_finish(fake, transport, collect):
    request = chat(fake)
    outs = collect(provider_for(fake, transport), request)
    assert "".join(o.text for o in outs) == REPLY
    assert len([o for o in outs if o.text]) > 1  # really streamed
    assert all(o.finish_reason is None for o in outs[:-1])
    last = outs[-1]
    assert last.finish_reason == "stop" and last.text == ""
    assert last.usage.prompt_tokens == PROMPT_TOKENS and last.usage.completion_tokens == 8
    assert all(o.request_id == request.request_id and o.token_ids == [] for o in outs)
    assert last.timings.time_to_first_token > 0
    assert len(fake.requests) == 1


def test_max_tokens_gives_finish_reason_length(fake, transport):
    outs = run(provider_for(fake, transport), chat(fake, max_tokens=3))
    assert "".join(o.text for o in outs) == "Hello there!"
    assert outs[-1].finish_reason == "length" and outs[-1].usage.completion_tokens == 3


def test_sampling_fields_and_headers_sent(fake, transport):
    run(provider_for(fake, transport), chat(fake, temperature=0.3, top_p=0.9, max_tokens=50, stop=["\n\n", "END"],
                                            seed=7, presence_penalty=0.5, frequency_penalty=0.25))
    sent = fake.last
    assert sent.body["model"] == WIRE_MODEL[fake.kind]
    assert sent.body["messages"] == CHAT and sent.body["stream"] is True
    if fake.kind == "ollama":
        assert sent.path == "/api/chat"
        assert sent.body["options"] == {
            "temperature": 0.3, "top_p": 0.9, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "num_predict": 50,
            "stop": ["\n\n", "END"], "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.25}
        return
    body = sent.body
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.3, 0.9, 50, 7)
    assert body["stop"] == ["\n\n", "END"]
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, 0.25)
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    if fake.kind == "azure":
        assert sent.query == {"api-version": "2024-05-01-preview"}
        assert sent.headers["api-key"] == KEY
        assert "stream_options" not in body and "extra-parameters" not in sent.headers
    else:
        assert body["stream_options"] == {"include_usage": True}
    if fake.kind == "github":
        assert sent.headers["accept"] == "application/vnd.github+json"
        assert sent.headers["x-github-api-version"] == "2022-11-28"
    else:
        assert sent.headers["accept"] == "text/event-stream"


def test_defaults_send_no_optional_fields(transport):
    with FakeProvider("openai") as fake:
        run(provider_for(fake, transport), chat(fake))
    assert set(fake.last.body) == {"model", "messages", "stream", "stream_options", "temperature", "top_p",
                                   "max_tokens"}


def test_json_mode(fake, transport):
    run(provider_for(fake, transport), chat(fake, response_format="json_object"))
    if fake.kind == "ollama":
        assert fake.last.body["format"] == "json"
    else:
        assert fake.last.body["response_format"] == {"type": "json_object"}


def test_completion_prompt(fake, transport):
    provider = provider_for(fake, transport)
    request = ProviderRequest(MODEL[fake.kind], prompt="Once upon a time", params=SamplingParams(max_tokens=4))
    if fake.kind in ("github", "azure"):
        with pytest.raises(InvalidParameterError) as err:
            provider.stream(request)
        assert err.value.param == "prompt" and "chat messages" in err.value.message
        assert fake.requests == []
        return
    outs = run(provider, request)
    assert "".join(o.text for o in outs) == "Hello there! How"
    assert outs[-1].finish_reason == "length"
    if fake.kind == "ollama":
        assert fake.last.path == "/api/generate"
        assert fake.last.body["prompt"] == "Once upon a time" and fake.last.body["raw"] is True
    else:
        assert fake.last.path == "/v1/completions" and fake.last.body["prompt"] == "Once upon a time"


def test_completion_without_max_tokens_asks_for_no_limit(transport):
    with FakeProvider("openai") as fake:
        run(provider_for(fake, transport), ProviderRequest("test-model", prompt="x",
                                                           params=SamplingParams(max_tokens=None)))
    assert fake.last.body["max_tokens"] is None  # not the API's default of 16


def test_ollama_timings_from_server_durations(transport):
    with FakeProvider("ollama", key=None) as fake:
        last = run(provider_for(fake, transport), chat(fake))[-1]
    assert last.timings.prefill_seconds == pytest.approx(0.25)
    assert last.timings.decode_seconds == pytest.approx(0.5)


def test_ollama_extra_options_join_ours(transport):
    with FakeProvider("ollama", key=None) as fake:
        request = chat(fake, temperature=0)
        request.extra_body = {"options": {"num_ctx": 8192}, "keep_alive": "10m"}
        run(provider_for(fake, transport), request)
    body = fake.last.body
    assert body["options"]["num_ctx"] == 8192 and body["options"]["temperature"] == 0 and body["keep_alive"] == "10m"


def test_ollama_repetition_penalty_covers_the_whole_context(transport):
    with FakeProvider("ollama", key=None) as fake:
        run(provider_for(fake, transport), chat(fake, repetition_penalty=1.1, top_k=40, min_p=0.05))
    options = fake.last.body["options"]
    assert (options["repeat_penalty"], options["repeat_last_n"], options["top_k"], options["min_p"]) == (
        1.1, -1, 40, 0.05)


def test_github_org_and_legacy_endpoint(transport):
    with FakeProvider("github") as fake:
        config = ProvidersConfig({"github": ProviderSettings(api_key=KEY, org="my org")})
        provider = get_provider("github", config=config, transport=transport)
        assert provider.base_url == "https://models.github.ai/orgs/my%20org/inference"
        legacy = get_provider("github", transport=transport, config=ProvidersConfig(
            {"github": ProviderSettings(api_key=KEY, base_url="https://models.inference.ai.azure.com")}))
        assert legacy.build_call(chat(fake)).body["model"] == "Phi-3.5-mini-instruct"
        assert provider.build_call(chat(fake)).body["model"] == "microsoft/Phi-3.5-mini-instruct"


def test_azure_extra_body_sent_with_pass_through(transport):
    with FakeProvider("azure") as fake:
        provider = provider_for(fake, transport)
        request = chat(fake)
        request.extra_body = {"top_k": 5}
        assert "".join(o.text for o in run(provider, request)) == REPLY
        assert fake.last.headers["extra-parameters"] == "pass-through" and fake.last.body["top_k"] == 5


def test_azure_without_model_uses_the_endpoint_model(transport):
    with FakeProvider("azure") as fake:
        run(provider_for(fake, transport), ProviderRequest("", messages=CHAT))
        assert "model" not in fake.last.body


def test_openai_compatible_servers_get_vllm_extras(transport):
    with FakeProvider("openai") as fake:
        run(provider_for(fake, transport), chat(fake, top_k=20, min_p=0.05, repetition_penalty=1.2,
                                                stop_token_ids=[7], ignore_eos=True, logit_bias={42: -100},
                                                stop=["a", "b", "c", "d", "e"]))
    body = fake.last.body
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (20, 0.05, 1.2)
    assert (body["stop_token_ids"], body["ignore_eos"], body["logit_bias"]) == ([7], True, {"42": -100.0})
    assert len(body["stop"]) == 5


def test_api_openai_com_refuses_what_openai_lacks(transport):
    provider = get_provider("openai", transport=transport,
                            config=ProvidersConfig({"openai": ProviderSettings(api_key="sk-test")}))
    for params in ({"top_k": 5}, {"min_p": 0.1}, {"repetition_penalty": 1.1}, {"stop_token_ids": [2]},
                   {"ignore_eos": True}):
        with pytest.raises(InvalidParameterError) as err:
            provider.stream(ProviderRequest("gpt-4o-mini", messages=CHAT, params=SamplingParams(**params)))
        assert err.value.param == next(iter(params)) and "openai provider cannot honour" in err.value.message
    with pytest.raises(InvalidParameterError) as err:
        provider.stream(ProviderRequest("gpt-4o-mini", messages=CHAT, params=SamplingParams(stop=list("abcde"))))
    assert err.value.param == "stop" and "at most 4" in err.value.message
    call = provider.build_call(ProviderRequest("gpt-4o-mini", messages=CHAT,
                                               params=SamplingParams(logit_bias={50256: -100})))
    assert call.body["logit_bias"] == {"50256": -100.0}


UNSUPPORTED = [
    (kind, field, value)
    for kind in KINDS
    for field, value in [("logits_processors", [lambda ids, logits: logits]), ("num_beams", 2), ("logprobs", 0)]
] + [
    (kind, field, value)
    for kind in ("github", "azure", "nim")
    for field, value in [("top_k", 40), ("min_p", 0.05), ("repetition_penalty", 1.1), ("stop_token_ids", [2]),
                         ("ignore_eos", True), ("logit_bias", {5: 1.0})]
] + [("ollama", "stop_token_ids", [2]), ("ollama", "ignore_eos", True), ("ollama", "logit_bias", {5: 1.0})]


@pytest.mark.parametrize("kind,field,value", UNSUPPORTED, ids=[f"{k}-{f}" for k, f, _ in UNSUPPORTED])
def test_unsupported_parameter_is_refused_by_name(kind, field, value, transport):
    with FakeProvider(kind) as fake:
        provider = provider_for(fake, transport)
        params = SamplingParams(**{field: value, **({"temperature": 0} if field == "num_beams" else {})})
        with pytest.raises(InvalidParameterError) as err:
            provider.stream(ProviderRequest(MODEL[kind], messages=CHAT, params=params))
        assert err.value.param == field and f"{kind} provider cannot honour" in err.value.message
        with pytest.raises(InvalidParameterError):
            provider.astream(ProviderRequest(MODEL[kind], messages=CHAT, params=params))
    assert fake.requests == []


def test_clouds_limit_stop_strings(transport):
    with FakeProvider("github") as fake:
        with pytest.raises(InvalidParameterError) as err:
            provider_for(fake, transport).stream(chat(fake, stop=list("abcde")))
    assert err.value.param == "stop"


def test_request_needs_messages_or_prompt():
    with pytest.raises(InvalidParameterError):
        ProviderRequest("m")
    with pytest.raises(InvalidParameterError):
        ProviderRequest("m", messages=CHAT, prompt="x")
    with pytest.raises(InvalidParameterError):
        ProviderRequest("m", messages=[{"role": "user"}])


def test_known_models_are_static_phi_lists():
    config = ProvidersConfig({"github": ProviderSettings(api_key="t"), "nim": ProviderSettings(api_key="k"),
                              "azure": ProviderSettings(base_url="https://x.models.ai.azure.com", api_key="k")})
    assert "Phi-3.5-mini-instruct" in get_provider("github", config=config).known_models()
    assert "Phi-3.5-mini-instruct" in get_provider("azure", config=config).known_models()
    assert "microsoft/phi-3.5-mini-instruct" in get_provider("nim", config=config).known_models()
    assert "phi3.5" in get_provider("ollama", config=config).known_models()


# -- errors -------------------------------------------------------------------------------
CREDENTIAL_VARIABLE = {"openai": None, "github": "GITHUB_TOKEN", "azure": "AZURE_AI_CREDENTIAL",
                       "nim": "NVIDIA_API_KEY", "ollama": None}


def test_wrong_credential_names_what_to_check(transport):
    for kind in ("openai", "github", "azure", "nim"):
        with FakeProvider(kind) as fake:
            with pytest.raises(ProviderAuthError) as err:
                run(provider_for(fake, transport, api_key="wrong"), chat(fake))
        message = err.value.message
        assert "401" in message and err.value.upstream_status == 401 and err.value.provider == kind
        if CREDENTIAL_VARIABLE[kind]:
            assert CREDENTIAL_VARIABLE[kind] in message
        assert "bad credentials" in message or "Unauthorized" in message
    assert transport.retry.max_retries and len(fake.requests) == 1  # a 401 is not retried


def test_forbidden_says_the_credential_lacks_access(transport):
    with FakeProvider("github") as fake:
        fake.queue(Reply(403, {"error": {"code": "no_access", "message": "No access to model"}}))
        with pytest.raises(ProviderAuthError) as err:
            run(provider_for(fake, transport), chat(fake))
    assert "403" in err.value.message and "GITHUB_TOKEN" in err.value.message and "models:read" in err.value.message


def test_unknown_model_is_not_found(fake, transport):
    request = ProviderRequest("no-such-model", messages=CHAT)
    with pytest.raises(ProviderNotFoundError) as err:
        run(provider_for(fake, transport), request)
    message = err.value.message
    assert "'no-such-model'" in message and "404" in message and err.value.status_code == 404
    if fake.kind == "ollama":
        assert "ollama pull no-such-model" in message and "OLLAMA_HOST" in message
    assert len(fake.requests) == 1


def test_wrong_base_url_is_not_found(transport):
    with FakeProvider("nim") as fake:
        with pytest.raises(ProviderNotFoundError) as err:
            run(provider_for(fake, transport, base_url=fake.root + "/wrong"), chat(fake))
    assert "NIM_BASE_URL" in err.value.message and "Not Found" in err.value.message


def test_bad_request_carries_the_providers_message(transport):
    with FakeProvider("openai") as fake:
        # A range narrower than ours (some providers stop at 1): their message reaches the caller.
        fake.queue(Reply(400, {"error": {"message": "temperature must be <= 1", "type": "invalid_request_error",
                                         "param": "temperature", "code": None}}))
        with pytest.raises(ProviderRequestError) as err:
            run(provider_for(fake, transport), chat(fake, temperature=1.5))
    assert "temperature must be <= 1" in err.value.message and err.value.param == "temperature"
    assert err.value.status_code == 400


def test_azure_unknown_field_error_is_shown(transport):
    with FakeProvider("azure") as fake:
        provider = provider_for(fake, transport)
        call = provider.build_call(chat(fake))
        call.body["top_k"] = 3  # as if sent without pass-through
        with pytest.raises(ProviderRequestError) as err:
            with transport.open(call):
                pass
    assert "extra-parameters" in err.value.message


ENV_OF = {"github": "GITHUB_TOKEN", "azure": "AZURE_AI_ENDPOINT", "nim": "NVIDIA_API_KEY", "openai": "OPENAI_API_KEY"}


@pytest.mark.parametrize("kind", list(ENV_OF))
def test_missing_credential_names_the_variable(kind, tmp_path):
    from slmkit.providers import load_config

    with pytest.raises(MissingCredentialError) as err:
        get_provider(kind, config=load_config(tmp_path, env={}))
    assert err.value.variable == ENV_OF[kind] and ENV_OF[kind] in err.value.message
    assert err.value.provider == kind


def test_azure_needs_its_key_too(tmp_path):
    from slmkit.providers import load_config

    with pytest.raises(MissingCredentialError) as err:
        get_provider("azure", config=load_config(tmp_path, env={"AZURE_AI_ENDPOINT": "https://x.models.ai.azure.com"}))
    assert err.value.variable == "AZURE_AI_CREDENTIAL"


def test_self_hosted_endpoints_need_no_key(tmp_path):
    from slmkit.providers import load_config

    config = load_config(tmp_path, env={"NIM_BASE_URL": "http://gpu:8000/v1", "OPENAI_BASE_URL": "http://gpu:8001/v1"})
    assert get_provider("nim", config=config).base_url == "http://gpu:8000/v1"
    assert get_provider("openai", config=config).base_url == "http://gpu:8001/v1"
