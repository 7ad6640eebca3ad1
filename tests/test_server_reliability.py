"""What one request must never do to the others (issue 12, found by trying it as a new user)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

TWO_PLUS_TWO = [{"role": "user", "content": "What is 2 + 2?"}]


def generated_tokens(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("slmkit_generation_tokens_total{"))


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=300)


def test_seed_minus_one_is_a_random_seed_and_the_engine_keeps_serving(client, server):
    for _ in range(2):
        out = client.chat.completions.create(model="smollm2", messages=TWO_PLUS_TWO, seed=-1, temperature=0.8,
                                             max_tokens=8)
        assert out.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="seed: Input should be greater than or equal to -1"):
        client.chat.completions.create(model="smollm2", messages=TWO_PLUS_TWO, seed=-2, max_tokens=4)
    ollama = httpx.post(f"{server.base}/api/generate", json={"model": "smollm2", "prompt": "Hi", "stream": False,
                                                              "options": {"seed": -1, "num_predict": 4}}, timeout=300)
    assert ollama.status_code == 200 and ollama.json()["done"]
    answer = client.chat.completions.create(model="smollm2", messages=TWO_PLUS_TWO, temperature=0, max_tokens=128)
    assert "4" in answer.choices[0].message.content
    assert httpx.get(f"{server.base}/health").json()["status"] == "ok"


@pytest.mark.parametrize("route,body", [
    ("/v1/completions", {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 1500, "ignore_eos": True,
                         "temperature": 0}),
    ("/v1/chat/completions", {"model": "smollm2", "messages": [{"role": "user", "content": "Tell a long story."}],
                              "max_tokens": 1500, "ignore_eos": True, "temperature": 0}),
    ("/api/generate", {"model": "smollm2", "prompt": "Once upon a time", "stream": False, "raw": True,
                       "options": {"num_predict": 1500, "temperature": 0}}),
    ("/api/chat", {"model": "smollm2", "messages": [{"role": "user", "content": "Tell a long story."}],
                   "stream": False, "options": {"num_predict": 1500, "temperature": 0}}),
])
def test_a_non_streaming_client_that_leaves_is_aborted_and_its_kv_freed(server, route, body):
    """1500 tokens take 15 s or more here (about 95 tokens/s at best); the client gives up after
    1.5 s, and the server must stop at once rather than generate the rest for nobody."""
    before = generated_tokens(server.wait_idle(60))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base}{route}", json=body, timeout=httpx.Timeout(30, read=1.5))
    after = generated_tokens(server.wait_idle(timeout=8))
    assert after - before < 1500, "the abandoned request ran to its end"


def test_json_mode_works_at_smollm2s_own_sampling_and_with_min_p(client, server):
    """top_p 0.9 (SmolLM2's default) and min_p used to leave the grammar no token: the mask now
    comes before truncation."""
    outcomes = []
    for seed in range(6):
        out = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
            response_format={"type": "json_object"}, temperature=1.0, top_p=0.9, seed=seed, max_tokens=96,
            extra_body={"min_p": 0.1} if seed % 2 else {})
        choice = out.choices[0]
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
        outcomes.append(choice.finish_reason)
    assert "stop" in outcomes
    ollama = httpx.post(f"{server.base}/api/chat", json={
        "model": "smollm2", "messages": [{"role": "user", "content": "Give the capital of France as JSON."}],
        "format": "json", "stream": False, "options": {"top_p": 0.9, "min_p": 0.1, "seed": 3, "num_predict": 96}},
        timeout=300)
    assert ollama.status_code == 200, ollama.text
    if ollama.json()["done_reason"] == "stop":
        assert isinstance(json.loads(ollama.json()["message"]["content"]), dict)


@pytest.mark.parametrize("field,value", [
    ("temperature", 1e308), ("temperature", -1), ("top_p", 0), ("top_p", 1.5), ("min_p", -0.1),
    ("frequency_penalty", 1e9), ("presence_penalty", -3), ("repetition_penalty", 0), ("top_k", -2),
    ("seed", 2**64), ("seed", -(2**63)), ("max_tokens", 2**40), ("n", 10**6), ("top_logprobs", 10**6),
    ("logit_bias", {"1": 1e300}), ("logit_bias", {str(i): 1 for i in range(2000)}), ("stop", ["x" * 100_000]),
    ("stop_token_ids", list(range(1000))),
])
def test_extreme_numbers_in_every_sampling_field_are_a_400(server, field, value):
    body = {"model": "smollm2", "messages": TWO_PLUS_TWO, "max_tokens": 4, field: value}
    if field == "top_logprobs":
        body["logprobs"] = True
    r = httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["param"] or field in r.json()["error"]["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_a_400(server, literal):
    for route, body in (("/v1/chat/completions", '{"model": "smollm2", "messages": [{"role": "user", "content": '
                                                  '"hi"}], "temperature": %s}'),
                        ("/api/chat", '{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], '
                                      '"options": {"temperature": %s}}')):
        r = httpx.post(f"{server.base}{route}", content=body % literal, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
