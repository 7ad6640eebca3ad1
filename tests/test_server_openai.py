"""`slm serve` through the real `openai` and `azure-ai-inference` clients, on the real SmolLM2."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

pytestmark = pytest.mark.slow

TWO_PLUS_TWO = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=120)


def wait_idle(server, timeout=20.0):
    return server.wait_idle(timeout)


def test_chat_answers_and_reports_usage(client):
    out = client.chat.completions.create(model="smollm2", messages=TWO_PLUS_TWO, temperature=0, max_tokens=128)
    choice = out.choices[0]
    assert "4" in choice.message.content and choice.finish_reason == "stop"
    assert out.object == "chat.completion" and out.model == "smollm2"
    assert out.usage.completion_tokens > 0 and out.usage.prompt_tokens > 10
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_stream_joins_to_the_whole_answer_with_usage_last(client):
    whole = client.chat.completions.create(model="smollm2", messages=TWO_PLUS_TWO, temperature=0, max_tokens=64)
    chunks = list(client.chat.completions.create(model="smollm2", messages=TWO_PLUS_TWO, temperature=0,
                                                 max_tokens=64, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_and_max_tokens(client):
    out = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=3, temperature=0)
    assert out.choices[0].text.startswith(" Paris") and out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 3
    echoed = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=3,
                                       temperature=0, echo=True)
    assert echoed.choices[0].text == "The capital of France is" + out.choices[0].text


def test_completion_stream_and_several_prompts(client):
    streamed = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=3,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed).startswith(" Paris")
    out = client.completions.create(model="smollm2", prompt=["The capital of France is", "1, 2, 3, 4,"],
                                    max_tokens=4, temperature=0)
    assert [c.index for c in out.choices] == [0, 1]
    assert out.choices[0].text.startswith(" Paris") and "5" in out.choices[1].text


def test_n_choices_stop_and_seed(client):
    kwargs = dict(model="smollm2", messages=[{"role": "user", "content": "Tell me a story."}],
                  temperature=1.0, max_tokens=12, n=3, seed=7)
    a = client.chat.completions.create(**kwargs)
    b = client.chat.completions.create(**kwargs)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1
    assert a.usage.completion_tokens == 36  # three choices of 12 tokens, the prompt counted once
    stopped = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=20, temperature=0,
                                        stop=["7"])
    assert "7" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
    assert "6" in stopped.choices[0].text


def test_logprobs_are_distributions(client):
    out = client.chat.completions.create(model="smollm2", messages=TWO_PLUS_TWO, temperature=0, max_tokens=5,
                                         logprobs=True, top_logprobs=3)
    entries = out.choices[0].logprobs.content
    assert len(entries) == out.usage.completion_tokens
    for e in entries:
        tops = [t.logprob for t in e.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and all(v <= 0 for v in tops)
        assert e.token == e.top_logprobs[0].token and e.logprob == pytest.approx(tops[0], abs=1e-5)
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token


def test_json_object_output_parses(client):
    out = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Give me a JSON object with a name and an age."}],
        temperature=0, max_tokens=64, response_format={"type": "json_object"})
    assert out.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(out.choices[0].message.content), dict)


def test_models_and_embeddings(client):
    ids = [m.id for m in client.models.list()]
    assert "smollm2:original" in ids and "all-minilm" in ids
    assert client.models.retrieve("smollm2:original").id == "smollm2:original"
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]
    out = client.embeddings.create(model="all-minilm", input=texts)
    vecs = np.array([d.embedding for d in out.data])
    assert vecs.shape == (3, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
    assert out.usage.prompt_tokens > 0
    small = client.embeddings.create(model="all-minilm", input="hello", dimensions=64, encoding_format="base64")
    raw = np.frombuffer(base64.b64decode(small.data[0].embedding), dtype="<f4")
    assert raw.shape == (64,) and abs(np.linalg.norm(raw) - 1) < 1e-5


def test_16_concurrent_streams_equal_alone(client, server):
    questions = [f"What is {a} + {b}?" for a, b in zip(range(1, 17), range(5, 21))]

    def ask(q):
        stream = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": q}],
                                                temperature=0, max_tokens=32, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage.completion_tokens

    alone = [ask(q) for q in questions]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, questions))
    assert together == alone
    assert len(set(alone)) > 8  # the answers really differ: nothing can be mixed up unnoticed
    wait_idle(server)


def test_disconnect_mid_stream_frees_the_sequence(server):
    body = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.base}/v1/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        got = [next(lines) for _ in range(10)]
    assert any(line.startswith("data: ") for line in got)
    m = wait_idle(server)
    assert sum(v for k, v in m.items() if k.startswith("slmkit_generation_tokens_total{")) > 0


BAD_INPUTS = [
    # (method, path, body or raw bytes, status, param fragment)
    ("POST", "/v1/chat/completions", b"{not json", 400, None),
    ("POST", "/v1/chat/completions", b"", 400, None),
    ("POST", "/v1/chat/completions", [1, 2], 400, None),
    ("POST", "/v1/chat/completions", {"model": "smollm2"}, 400, "messages"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": []}, 400, "messages"),
    ("POST", "/v1/chat/completions", {"model": "nope", "messages": TWO_PLUS_TWO}, 404, "model"),
    ("POST", "/v1/chat/completions", {"model": "../etc", "messages": TWO_PLUS_TWO}, 404, "model"),
    ("POST", "/v1/chat/completions", {"model": "/etc/passwd.gguf", "messages": TWO_PLUS_TWO}, 404, "model"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": TWO_PLUS_TWO, "temperature": "hot"}, 400,
     "temperature"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": TWO_PLUS_TWO, "temperature": 3}, 400,
     "temperature"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": TWO_PLUS_TWO, "max_tokens": 0}, 400,
     "max_tokens"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": TWO_PLUS_TWO, "max_tokens": 5000}, 400,
     "max_tokens"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": TWO_PLUS_TWO, "bogus": 1}, 400, "bogus"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": [{"role": "wizard", "content": "hi"}]}, 400,
     "messages"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": TWO_PLUS_TWO, "n": 0}, 400, "n"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": TWO_PLUS_TWO, "stop": ["a"] * 5}, 400, "stop"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": TWO_PLUS_TWO, "logit_bias": {"x": 1}}, 400,
     "logit_bias"),
    ("POST", "/v1/chat/completions", {"model": "smollm2", "messages": TWO_PLUS_TWO,
                                      "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                                          "type": "object", "uniqueItems": True}}}]}, 400, "tools"),
    ("POST", "/v1/completions", {"model": "smollm2", "prompt": "word " * 3000}, 400, None),
    ("POST", "/v1/completions", {"model": "smollm2", "prompt": [10**9]}, 400, "prompt"),
    ("POST", "/v1/completions", {"model": "smollm2", "prompt": ""}, 400, "prompt"),
    ("POST", "/v1/embeddings", {"model": "all-minilm", "input": []}, 400, "input"),
    ("POST", "/v1/embeddings", {"model": "all-minilm", "input": "x " * 600}, 400, None),
    ("POST", "/v1/embeddings", {"model": "smollm2", "input": "hi"}, 404, "model"),
    ("GET", "/v1/models/nope", None, 404, None),
    ("GET", "/v1/nowhere", None, 404, None),
    ("POST", "/chat/completions", {"messages": TWO_PLUS_TWO}, 400, "api-version"),
    ("POST", "/chat/completions?api-version=2024-05-01-preview", {"messages": TWO_PLUS_TWO, "foo": 1}, 400, "foo"),
]


@pytest.mark.parametrize("method,path,body,status,param", BAD_INPUTS,
                         ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_input_gets_a_clear_error(server, method, path, body, status, param):
    kwargs = {"content": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
    response = httpx.request(method, f"{server.base}{path}", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    if param:
        assert param in (error.get("param") or error.get("target") or "") + error["message"]
    if path.startswith("/chat"):
        assert response.headers["x-ms-error-code"] == error["code"]


def test_too_long_request_names_both_counts(server):
    body = {"model": "smollm2", "messages": TWO_PLUS_TWO, "max_tokens": 5000}
    error = httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=30).json()["error"]
    assert "5000" in error["message"] and "2048" in error["message"] and error["code"] == "context_length_exceeded"


def test_oversized_body_is_413_and_the_server_survives_all_of_it(server, client):
    response = httpx.post(f"{server.base}/v1/chat/completions", content=b"x" * (9 * 1024 * 1024),
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 413 and "at most" in response.json()["error"]["message"]
    wait_idle(server)
    assert client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=2,
                                     temperature=0).choices[0].text.startswith(" Paris")


def test_azure_ai_inference_sdk_chat_and_stream(server):
    from azure.ai.inference import ChatCompletionsClient
    from azure.ai.inference.models import UserMessage
    from azure.core.credentials import AzureKeyCredential

    az = ChatCompletionsClient(endpoint=server.base, credential=AzureKeyCredential("unused"))
    out = az.complete(messages=[UserMessage(content="What is 2 + 2?")], temperature=0, max_tokens=128)
    assert "4" in out.choices[0].message.content and out.usage.completion_tokens > 0
    streamed = "".join(u.choices[0].delta.content or "" for u in
                       az.complete(messages=[UserMessage(content="What is 2 + 2?")], temperature=0,
                                   max_tokens=128, stream=True) if u.choices)
    assert streamed == out.choices[0].message.content
    assert az.get_model_info().model_name == "smollm2:original"
    with_extra = az.complete(messages=[UserMessage(content="What is 2 + 2?")], temperature=0, max_tokens=8,
                             model_extras={"top_k": 1})  # the SDK sends extra-parameters: pass-through
    assert with_extra.choices[0].message.content


def test_metrics_count_requests_and_tokens(server, client):
    client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=2, temperature=0)
    m = server.metrics()
    assert m['slmkit_generation_tokens_total{model="smollm2:original"}'] > 0
    assert m['slmkit_time_to_first_token_seconds_count{model="smollm2:original"}'] > 0
    assert m['slmkit_kv_cache_total_cells{model="smollm2:original"}'] == 16 * 2048
    assert any(k.startswith('slmkit_requests_total{route="/v1/completions",status="200"}') for k in m)
