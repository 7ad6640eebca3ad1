"""Property-based fuzzing of every route of the real server, from its own OpenAPI schema.

Schemathesis draws bodies that follow the schema (positive: they must be answered, or refused
with a 4xx in the API's own error shape) and bodies that break it (negative: always a 4xx).
Positive bodies are steered to the loaded model half of the time and kept to a few tokens, so
the fuzzing reaches the engine itself and the suite stays bounded: a fixed number of examples
per route, drawn from a fixed seed (the same cases on every run), and a timeout on every call,
so a hang is a failure, not a stuck CI job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from server_process import ServerProcess

from slmkit.server.openapi import ERROR_SCHEMAS, error_schema_for

pytestmark = pytest.mark.slow

GENERATING = {"/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate", "/chat/completions",
              "/v1/responses", "/v1/messages"}
# Named model changes the store: fuzzed bodies must not delete or overwrite the model the rest use.
STORE_CHANGING = {"/api/pull", "/api/create", "/api/delete"}
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 30}
GENERATING_EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 25}
STATS: dict[str, dict[int, int]] = {}  # "METHOD path" -> {status: count}, printed at the end


@pytest.fixture(scope="module")
def fuzz_server(slmkit_home):
    proc = ServerProcess("--model", "smollm2", "--parallel", "4", "--context-length", "512",
                         "--request-timeout", "60", "--keep-alive", "-1")
    yield proc
    proc.stop()
    report = {op: dict(sorted(codes.items())) for op, codes in sorted(STATS.items())}
    print("\nfuzzing: examples per route and status:\n" + json.dumps(report, indent=1))
    if os.environ.get("SLMKIT_FUZZ_STATS"):  # benchmarks/fuzz.py publishes them
        Path(os.environ["SLMKIT_FUZZ_STATS"]).write_text(json.dumps(report))


def _operations():
    from slmkit.server.app import create_app
    from slmkit.server.config import ServerConfig

    schema = schemathesis.openapi.from_dict(create_app(ServerConfig()).openapi())
    cases = []
    for path, ops in sorted(schema.raw_schema["paths"].items()):
        for method, op in sorted(ops.items()):
            cases.append((path, method.upper(), GenerationMode.POSITIVE))
            # Something a request could get wrong (a path segment that is any string cannot be).
            if op.get("requestBody") or any(p["in"] != "path" for p in op.get("parameters", [])):
                cases.append((path, method.upper(), GenerationMode.NEGATIVE))
    return schema, cases


SCHEMA, CASES = _operations()


def steer(case, index: int) -> None:
    """Half of the valid bodies name the loaded model, and none asks for more than 8 tokens
    (keep_alive is left to the server: an unload and reload per example would only cost time)."""
    body = case.body
    if not isinstance(body, dict):
        return
    # (Not /api/pull: a real pull quantizes a variant and checks it, a minute of work per example.)
    if index % 2 == 0 and "model" in body and case.path not in STORE_CHANGING:
        body["model"] = "smollm2"
    body.pop("keep_alive", None)
    if case.path not in GENERATING:
        return
    if case.path.startswith("/api/"):
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        body["options"] = {**options, "num_predict": 8}
    elif case.path == "/v1/responses":
        limit = body.get("max_output_tokens")
        body["max_output_tokens"] = min(limit, 8) if isinstance(limit, int) else 8
    else:
        body["max_tokens"] = min(body["max_tokens"], 8) if isinstance(body.get("max_tokens"), int) else 8
        if isinstance(body.get("max_completion_tokens"), int):
            body["max_completion_tokens"] = min(body["max_completion_tokens"], 8)


def not_a_server_error(path: str, status: int) -> bool:
    return status < 500 or (path == "/api/push" and status == 501)  # no registry to push to: a clear 501


def check_answer(case, response) -> None:
    where = f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    assert not_a_server_error(case.path, response.status_code), where
    if response.status_code >= 400 and case.method != "HEAD":  # a HEAD answer has no body
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"error without a JSON body: {where}") from None
        jsonschema.validate(body, ERROR_SCHEMAS[error_schema_for(case.path)])


@pytest.mark.parametrize("path,method,mode", CASES, ids=[f"{m} {p} {g.value}" for p, m, g in CASES])
def test_no_route_answers_5xx_hangs_or_leaves_its_error_shape(fuzz_server, path, method, mode):
    operation = SCHEMA[path][method]
    examples = (GENERATING_EXAMPLES if path in GENERATING else EXAMPLES)[mode]
    stats = STATS.setdefault(f"{method} {path}", {})
    counter = {"n": 0}

    @seed(20261201)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode))
    def run(case):
        counter["n"] += 1
        if mode is GenerationMode.POSITIVE:
            steer(case, counter["n"])
        response = case.call(base_url=fuzz_server.base, timeout=90)
        stats[response.status_code] = stats.get(response.status_code, 0) + 1
        check_answer(case, response)

    run()
    # The engine is still healthy and holds nothing for the requests that were fuzzed.
    assert fuzz_server.wait_idle(timeout=30)
    assert fuzz_server.proc.poll() is None, fuzz_server.logs()[-2000:]


def test_the_server_still_answers_correctly_after_the_fuzzing(fuzz_server):
    import httpx

    r = httpx.post(f"{fuzz_server.base}/v1/completions", json={"model": "smollm2", "prompt": "The capital of France is",
                                                              "max_tokens": 3, "temperature": 0}, timeout=120)
    assert r.status_code == 200 and r.json()["choices"][0]["text"].startswith(" Paris"), r.text
    assert httpx.get(f"{fuzz_server.base}/health").json()["status"] == "ok"
    assert "Traceback" not in fuzz_server.logs(), fuzz_server.logs()[-3000:]


# Bodies no schema describes: any JSON value at all, nested deep, numbers past float range, and
# bytes that are not UTF-8. Every POST route must refuse them cleanly.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
RAW_BODIES = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.integers(min_value=1, max_value=200_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.just(b'{"model": "smollm2", "messages": [{"role": "user", "content": "\\ud800"}]}'),
    st.just(b'{"model": "smollm2", "prompt": "x", "max_tokens": 1e999}'),
)
POST_ROUTES = sorted(path for path, ops in SCHEMA.raw_schema["paths"].items() if "post" in ops)


@pytest.mark.parametrize("path", POST_ROUTES)
def test_bodies_no_schema_expresses_are_refused_cleanly(fuzz_server, path):
    import httpx

    route = path + ("?api-version=2024-05-01-preview" if path == "/chat/completions" else "")

    @seed(20261202)
    @settings(max_examples=40, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(RAW_BODIES)
    def run(raw):
        r = httpx.post(f"{fuzz_server.base}{route}", content=raw, headers={"content-type": "application/json"},
                       timeout=90)
        stats = STATS.setdefault(f"POST {path} (any bytes)", {})
        stats[r.status_code] = stats.get(r.status_code, 0) + 1
        assert not_a_server_error(path, r.status_code), (raw[:200], r.status_code, r.text[:300])
        if r.status_code >= 400:
            jsonschema.validate(r.json(), ERROR_SCHEMAS[error_schema_for(path)])

    run()
