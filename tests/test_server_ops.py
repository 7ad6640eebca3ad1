"""Operations: API keys, queue limit (429), timeouts, keep-alive unload, graceful shutdown."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from server_process import ServerProcess

pytestmark = pytest.mark.slow

KEY = "sk-test-123"
LONG = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
        "temperature": 0}


@pytest.fixture(scope="module")
def guarded(slmkit_home):
    """One slot, no queue, a 2 s keep-alive, and an API key."""
    proc = ServerProcess("--parallel", "1", "--max-queue", "0", "--keep-alive", "2",
                         "--context-length", "1024", "--api-key", KEY)
    yield proc
    proc.stop()


def auth(key=KEY):
    return {"Authorization": f"Bearer {key}"}


def test_api_keys_are_required_except_for_health(guarded):
    assert httpx.get(f"{guarded.base}/health").status_code == 200
    missing = httpx.get(f"{guarded.base}/v1/models")
    assert missing.status_code == 401 and "API key" in missing.json()["error"]["message"]
    assert httpx.get(f"{guarded.base}/v1/models", headers=auth("wrong")).status_code == 401
    assert httpx.get(f"{guarded.base}/api/tags").json() == {"error": "missing API key: send `Authorization: "
                                                                     "Bearer <key>`, an `api-key` or an "
                                                                     "`x-api-key` header"}
    assert httpx.get(f"{guarded.base}/v1/models", headers={"api-key": KEY}).status_code == 200
    client = openai.OpenAI(base_url=f"{guarded.base}/v1", api_key=KEY, max_retries=0)
    assert client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=2,
                                     temperature=0).choices[0].text.startswith(" Paris")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{guarded.base}/v1", api_key="nope", max_retries=0).models.list()


def test_anthropic_clients_authenticate_with_x_api_key(guarded):
    import anthropic

    client = anthropic.Anthropic(base_url=guarded.base, api_key=KEY, max_retries=0, timeout=60)
    message = client.messages.create(model="smollm2", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert message.usage.output_tokens == 2
    with pytest.raises(anthropic.AuthenticationError) as info:
        anthropic.Anthropic(base_url=guarded.base, api_key="nope", max_retries=0).messages.create(
            model="smollm2", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert info.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                          "message": "invalid API key"}}
    # / is the playground's page, public by design (tests/test_playground.py); its API calls need the key
    assert httpx.get(f"{guarded.base}/").status_code == 200


def test_a_full_queue_answers_429_with_retry_after(guarded):
    started = threading.Event()

    def occupy():
        with httpx.stream("POST", f"{guarded.base}/v1/completions", json={**LONG, "stream": True},
                          headers=auth(), timeout=30) as r:
            for _ in r.iter_lines():
                started.set()

    worker = threading.Thread(target=occupy)
    worker.start()
    assert started.wait(30)
    busy = httpx.post(f"{guarded.base}/v1/completions", json={**LONG, "max_tokens": 2}, headers=auth())
    assert busy.status_code == 429 and int(busy.headers["retry-after"]) >= 1
    assert busy.json()["error"]["type"] == "rate_limit_error"
    worker.join()


def test_requests_past_the_time_limit_are_stopped(slmkit_home):
    proc = ServerProcess("--model", "smollm2", "--parallel", "2", "--request-timeout", "2",
                         "--context-length", "2048")
    try:
        body = {**LONG, "max_tokens": 2000}
        r = httpx.post(f"{proc.base}/v1/completions", json=body, timeout=30)
        assert r.status_code == 504 and "2 s" in r.json()["error"]["message"]
        with httpx.stream("POST", f"{proc.base}/v1/completions", json={**body, "stream": True}, timeout=30) as s:
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert len(events) > 1 and json.loads(events[-1][6:])["error"]["code"] == "timeout"
        # The abort reaches the engine thread between two forward steps; on a loaded CPU one
        # step can take a while, so wait for it (bounded) instead of a fixed sleep.
        deadline = time.monotonic() + 15
        while True:
            m = proc.metrics()
            freed = (m['slmkit_running_sequences{model="smollm2:original"}'] == 0
                     and m['slmkit_kv_cache_used_cells{model="smollm2:original"}'] == 0)
            if freed or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert m['slmkit_running_sequences{model="smollm2:original"}'] == 0
        assert m['slmkit_kv_cache_used_cells{model="smollm2:original"}'] == 0
    finally:
        proc.stop()


def test_idle_models_unload_after_keep_alive(guarded):
    httpx.post(f"{guarded.base}/v1/completions", json={**LONG, "max_tokens": 1}, headers=auth(), timeout=30)
    assert httpx.get(f"{guarded.base}/health").json()["models"] == ["smollm2:original"]
    deadline = time.monotonic() + 15
    while httpx.get(f"{guarded.base}/health").json()["models"]:
        assert time.monotonic() < deadline, "the model stayed loaded past its keep-alive"
        time.sleep(0.5)


def test_shutdown_lets_running_streams_finish(slmkit_home):
    proc = ServerProcess("--model", "smollm2", "--parallel", "2", "--context-length", "1024")
    body = {**LONG, "max_tokens": 60, "stream": True}
    with httpx.stream("POST", f"{proc.base}/v1/completions", json=body, timeout=60) as s:
        lines = s.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        stopper = threading.Thread(target=proc.stop)
        stopper.start()
        rest = [line for line in lines if line.startswith("data: ")]
    stopper.join()
    assert proc.proc.returncode == 0, proc.logs()
    assert first and rest[-1] == "data: [DONE]"
    finals = [json.loads(x[6:])["choices"][0]["finish_reason"] for x in rest[:-1]]
    assert finals[-1] == "length"
    assert "Application shutdown complete" in proc.logs()


def test_every_route_but_health_needs_the_key_and_keys_never_reach_logs_or_bodies(guarded):
    """The whole OpenAPI schema's routes, asked without a key, with a wrong one and with the right
    one (in each header style clients use); the wrong key and the right key are then looked for
    in the server's log and in every answer's body."""
    wrong = "sk-wrong-0123456789abcdef"
    schema = httpx.get(f"{guarded.base}/openapi.json", headers=auth()).json()
    assert httpx.get(f"{guarded.base}/openapi.json").status_code == 401
    bodies = []
    for path, operations in schema["paths"].items():
        path = path.replace("{model_id}", "smollm2")
        for method in operations:
            for headers in ({}, auth(wrong), {"x-api-key": wrong}, {"api-key": wrong}):
                r = httpx.request(method.upper(), f"{guarded.base}{path}", headers=headers, json={}, timeout=30)
                bodies.append(r.text)
                assert r.status_code == (200 if path == "/health" else 401), (method, path, headers, r.text)
    for headers in (auth(), {"x-api-key": KEY}, {"api-key": KEY}):
        r = httpx.get(f"{guarded.base}/metrics", headers=headers)
        assert r.status_code == 200 and "slmkit_" in r.text
        bodies.append(r.text)
    assert not any(wrong in b or KEY in b for b in bodies)
    logs = guarded.logs()
    assert wrong not in logs and KEY not in logs


def test_cors_is_off_unless_an_origin_is_given(guarded, slmkit_home):
    origin = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    r = httpx.options(f"{guarded.base}/v1/chat/completions", headers=origin)
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in httpx.get(f"{guarded.base}/health", headers=origin).headers
    proc = ServerProcess("--cors-origin", "http://app.example", "--api-key", KEY)
    try:
        ok = httpx.options(f"{proc.base}/v1/chat/completions", headers={**origin, "Origin": "http://app.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://app.example"
        other = httpx.options(f"{proc.base}/v1/chat/completions", headers=origin)
        assert other.headers.get("access-control-allow-origin") != "http://evil.example"
        # CORS opens no door: the key is still needed.
        assert httpx.get(f"{proc.base}/v1/models", headers={"Origin": "http://app.example"}).status_code == 401
    finally:
        proc.stop()


def test_binding_beyond_loopback_without_a_key_warns(slmkit_home):
    proc = ServerProcess("--host", "0.0.0.0")
    try:
        assert "serving on 0.0.0.0 without an API key" in proc.logs()
    finally:
        proc.stop()
