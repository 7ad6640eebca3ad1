"""Faults inside the server: a dead engine thread is seen, reported and replaced."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from slmkit.server.app import create_app
from slmkit.server.config import ServerConfig

pytestmark = pytest.mark.slow


class LoopKiller(BaseException):
    """What no `except Exception` catches: a bug in the engine loop itself."""


def test_a_dead_engine_is_reported_on_health_its_callers_get_503_and_the_next_request_reloads(slmkit_home):
    app = create_app(ServerConfig(models=["smollm2"], parallel=2, context_length=512, keep_alive=-1))
    body = {"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}
    with TestClient(app) as client:
        assert client.post("/v1/completions", json=body).json()["choices"][0]["text"].startswith(" Paris")
        (served,) = app.state.ctx.manager.loaded.values()

        def broken_forward(chunks):
            raise LoopKiller("a bug in the loop")

        served.engine.engine.runner.forward = broken_forward
        dead = client.post("/v1/completions", json=body)
        assert dead.status_code == 503 and dead.headers["retry-after"] == "1"
        assert "engine has stopped" in dead.json()["error"]["message"]
        assert "LoopKiller: a bug in the loop" in dead.json()["error"]["message"]
        served.engine.loop._thread.join(5)
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["dead_engines"] == [served.name]
        again = client.post("/v1/completions", json=body)  # a fresh engine and runner
        assert again.status_code == 200 and again.json()["choices"][0]["text"].startswith(" Paris")
        assert client.get("/health").json()["status"] == "ok"
        assert served not in app.state.ctx.manager.loaded.values()
