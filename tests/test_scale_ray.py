"""`slm serve --ray` on a local Ray: two replicas (one thread each) behind Ray Serve's proxy.

One Ray start for the whole module (it costs ~20 s and the machine's 2 cores are shared).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import time

import httpx
import openai
import pytest

pytest.importorskip("ray.serve")

from fastapi.testclient import TestClient  # noqa: E402

from slmkit.scale.ray_serve import REPLICA_HEADER  # noqa: E402
from slmkit.server.app import create_app  # noqa: E402
from slmkit.server.config import BATCH_INVARIANT_CHUNK, ServerConfig  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "Water boils at", "One, two, three,", "The sky is"]
MAX_TOKENS = 8
TIMEOUT = httpx.Timeout(240, connect=20)  # generous: the 2 cores are shared with the team


def _tree(root: int) -> set[int]:
    """`root` and every process below it (Ray's gcs_server, raylet, workers, proxy, replicas)."""
    rows = [line.split() for line in subprocess.check_output(["ps", "-eo", "pid,ppid"], text=True).splitlines()[1:]]
    children: dict[int, list[int]] = {}
    for pid, ppid in rows:
        children.setdefault(int(ppid), []).append(int(pid))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _replica_pids() -> list[int]:
    out = subprocess.check_output(["ps", "-eo", "pid,args"], text=True)
    return [int(line.split()[0]) for line in out.splitlines() if "ServeReplica:slmkit:SlmkitServer" in line]


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess("--ray", "--replicas", "2", "--threads", "1", "--parallel", "2", "--model", "smollm2",
                         "--context-length", "512", "--batch-invariant", "--keep-alive", "-1",
                         ready_timeout=420)
    try:
        deadline = time.monotonic() + 300
        while len(_replica_pids()) < 2 or not _both_healthy(proc):
            assert time.monotonic() < deadline, f"two replicas never became ready:\n{proc.logs()[-3000:]}"
            time.sleep(2)
        yield proc
    finally:
        proc.stop()


def _both_healthy(proc: ServerProcess) -> bool:
    with cf.ThreadPoolExecutor(6) as pool:
        rs = list(pool.map(lambda _: httpx.get(f"{proc.base}/health", timeout=TIMEOUT), range(12)))
    return all(r.status_code == 200 and any(m.startswith("smollm2") for m in r.json()["models"]) for r in rs) and \
        len({r.headers[REPLICA_HEADER] for r in rs}) == 2


@pytest.fixture(scope="module")
def expected():
    """What one plain server (no Ray) answers, greedy and batch-invariant."""
    config = ServerConfig(models=["smollm2"], parallel=2, context_length=512, keep_alive=-1, threads=1,
                          max_chunk_per_sequence=BATCH_INVARIANT_CHUNK)
    with TestClient(create_app(config)) as client:
        return {p: client.post("/v1/completions", json={"model": "smollm2", "prompt": p, "max_tokens": MAX_TOKENS,
                                                        "temperature": 0}).json()["choices"][0]["text"]
                for p in PROMPTS}


def _stream(base: str, prompt: str) -> tuple[str, str, int]:
    """One client of its own: (replica, streamed text, number of chunks)."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", timeout=TIMEOUT.read, max_retries=0)
    with client.completions.with_streaming_response.create(model="smollm2", prompt=prompt, max_tokens=MAX_TOKENS,
                                                            temperature=0, stream=True) as response:
        replica = response.headers[REPLICA_HEADER]
        chunks = [c.choices[0].text for c in response.parse() if c.choices]
    return replica, "".join(chunks), len(chunks)


def test_clients_are_served_by_both_replicas_streamed_and_correct(server, expected):
    jobs = [PROMPTS[i % len(PROMPTS)] for i in range(12)]
    with cf.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda p: _stream(server.base, p), jobs))
    assert len({replica for replica, _, _ in results}) == 2, results
    for prompt, (replica, text, chunks) in zip(jobs, results):
        assert text == expected[prompt], (replica, prompt)
        assert chunks > 1, "the proxy must stream, not buffer the whole answer"


def test_metrics_are_per_replica(server):
    seen = {}
    with cf.ThreadPoolExecutor(6) as pool:
        for r in pool.map(lambda _: httpx.get(f"{server.base}/metrics", timeout=TIMEOUT), range(12)):
            assert r.status_code == 200 and "slmkit_generation_tokens_total" in r.text
            seen[r.headers[REPLICA_HEADER]] = r.text
    assert len(seen) == 2


def _outcome(base: str, prompt: str) -> str:
    try:
        with httpx.stream("POST", f"{base}/v1/completions", timeout=TIMEOUT,
                          json={"model": "smollm2", "prompt": prompt, "max_tokens": 24, "temperature": 0,
                                "stream": True}) as r:
            body = r.read().decode()
        if r.status_code == 200:
            assert body.rstrip().endswith("data: [DONE]"), body[-300:]
            return "ok"
        assert r.status_code in (500, 502, 503, 504), (r.status_code, body)
        return f"http {r.status_code}"
    except httpx.RemoteProtocolError:
        return "cut"  # the replica died mid-stream: the connection closes before [DONE], the client retries
    except httpx.ConnectError:
        return "refused"


def test_a_killed_replica_is_replaced_and_no_request_hangs(server):
    before = set(_replica_pids())
    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_outcome, server.base, PROMPTS[i % len(PROMPTS)]) for i in range(16)]
        time.sleep(3)
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        outcomes = [f.result(timeout=300) for f in futures]  # a hung request fails here
    assert "ok" in outcomes, outcomes
    assert all(o in ("ok", "cut", "refused") or o.startswith("http 5") for o in outcomes), outcomes
    deadline = time.monotonic() + 300
    while True:
        now = set(_replica_pids())
        if len(now) == 2 and victim not in now and _both_healthy(server):
            break
        assert time.monotonic() < deadline, f"replica not replaced: {now}"
        time.sleep(3)
    assert _outcome(server.base, PROMPTS[0]) == "ok"


def test_shutdown_leaves_no_ray_process(server):
    ray_pids = _tree(server.proc.pid)
    assert len(ray_pids) > 3, "Ray should have started its own processes under the command"
    assert server.stop(timeout=120) == 0
    deadline = time.monotonic() + 60
    while (left := [p for p in ray_pids if _alive(p)]):
        assert time.monotonic() < deadline, subprocess.check_output(["ps", "-o", "pid,args", "-p",
                                                                     ",".join(map(str, left))], text=True)
        time.sleep(1)
