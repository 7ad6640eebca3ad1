"""Ray Serve scale-out on this box: 1 vs 2 replicas (1 thread each) vs one direct server with 2
threads, at the same offered load; and what the proxy hop costs per request.

    python benchmarks/scale.py [--clients 4] [--requests 3] [--max-tokens 32]

Writes the `scale` section of BENCHMARKS.md. The machine's load average (os.getloadavg) is
recorded around every configuration: on a shared box, say so when reading the numbers.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_model, today, write_section  # noqa: E402
from _server import SlmServer  # noqa: E402

REPLICA_HEADER = "x-slmkit-replica"
PROMPTS = ["Write a short story about a robot who learns to paint.", "Explain how rain forms, step by step.",
           "List ten animals and one fact about each.", "Describe a walk through an old city at night."]
COMMON = ["--model", "smollm2", "--context-length", "1024", "--keep-alive", "-1"]


@dataclass
class Result:
    label: str
    tokens_per_s: float
    ttft_p50: float
    ttft_p90: float
    wall_s: float
    tokens: int
    replicas_seen: int
    load_before: float
    load_after: float


def stream_one(base: str, prompt: str, max_tokens: int) -> tuple[float, int, str]:
    started = time.perf_counter()
    ttft, tokens = None, 0
    body = {"model": "smollm2", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        replica = r.headers.get(REPLICA_HEADER, "direct")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and ttft is None:
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return ttft or float("nan"), tokens, replica


def wait_replicas(base: str, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with cf.ThreadPoolExecutor(4) as pool:
            rs = list(pool.map(lambda _: httpx.get(f"{base}/health", timeout=30), range(4 * n)))
        ok = [r for r in rs if r.status_code == 200 and r.json().get("models")]
        if len({r.headers.get(REPLICA_HEADER) for r in ok}) >= n and len(ok) == len(rs):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} replicas never became ready")
        time.sleep(2)


def offered_load(label: str, server: SlmServer, args) -> Result:
    stream_one(server.base, "Hello", 4)  # warm: the first request after a load pays for page-ins
    before = os.getloadavg()[0]
    jobs = [PROMPTS[i % len(PROMPTS)] for i in range(args.clients * args.requests)]
    started = time.perf_counter()
    with cf.ThreadPoolExecutor(args.clients) as pool:
        results = list(pool.map(lambda p: stream_one(server.base, p, args.max_tokens), jobs))
    wall = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return Result(label, tokens / wall, statistics.median(ttfts), ttfts[int(0.9 * (len(ttfts) - 1))], wall, tokens,
                  len({r[2] for r in results}), before, os.getloadavg()[0])


def hop_latency(base: str, n: int) -> float:
    """Median seconds for GET /health (no model work), sequential, one connection."""
    with httpx.Client(timeout=30) as client:
        client.get(f"{base}/health")
        times = []
        for _ in range(n):
            t = time.perf_counter()
            client.get(f"{base}/health").raise_for_status()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=3, help="per client")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--hops", type=int, default=50)
    args = p.parse_args()
    results, hops = [], {}
    configs = [
        ("Ray Serve, 1 replica x 1 thread", ["--ray", "--replicas", "1", "--threads", "1",
                                             "--parallel", str(args.clients)], 1),
        ("Ray Serve, 2 replicas x 1 thread", ["--ray", "--replicas", "2", "--threads", "1",
                                              "--parallel", str(args.clients)], 2),
        ("direct, 1 server x 2 threads", ["--threads", "2", "--parallel", str(args.clients)], 0),
    ]
    for label, flags, replicas in configs:
        print(f"== {label}", flush=True)
        server = SlmServer(*COMMON, *flags, ready_timeout=600)
        try:
            if replicas:
                wait_replicas(server.base, replicas)
            hops[label] = hop_latency(server.base, args.hops)
            results.append(offered_load(label, server, args))
            print(results[-1], flush=True)
        finally:
            server.stop(timeout=120)
    write_section("scale", markdown(results, hops, args))
    return 0


def markdown(results: list[Result], hops: dict[str, float], args) -> str:
    direct_label = next(label for label in hops if label.startswith("direct"))
    direct = hops[direct_label]
    ray_hop = statistics.median([v for k, v in hops.items() if k != direct_label])
    loads = [r.load_before for r in results] + [r.load_after for r in results]
    cores = os.cpu_count()
    lines = [
        "## scale — Ray Serve replicas vs one direct server (`benchmarks/scale.py`)",
        "",
        f"{today()}, {cpu_model()}, {cores} cores. SmolLM2 (bundled GGUF), greedy, {args.clients} streaming clients "
        f"x {args.requests} requests, max_tokens {args.max_tokens}: the same offered load for every row.",
        "",
        "| configuration | aggregate tokens/s | TTFT p50 | TTFT p90 | wall | replicas that answered | load avg (1 min) before → after |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r.label} | {r.tokens_per_s:.1f} | {r.ttft_p50 * 1000:.0f} ms | {r.ttft_p90 * 1000:.0f} ms | "
                     f"{r.wall_s:.1f} s | {r.replicas_seen} | {r.load_before:.1f} → {r.load_after:.1f} |")
    lines += [
        "",
        f"Proxy hop: GET /health (no model work) takes {direct * 1000:.1f} ms median direct and "
        f"{ray_hop * 1000:.1f} ms through Ray Serve's proxy, so about **{(ray_hop - direct) * 1000:.1f} ms per "
        "request** of overhead (HTTP proxy → replica actor call → ASGI), paid once per request, not per token.",
        "",
    ]
    if max(loads) > 0.5 * cores:
        lines.append(f"**The machine was shared and noisy**: the 1-minute load average was "
                     f"{min(loads):.1f}–{max(loads):.1f} on {cores} cores during the run (other sessions' "
                     "builds and tests), so the absolute numbers are low and the ratios carry the noise too.")
    else:
        lines.append(f"The machine was quiet (load average {min(loads):.1f}–{max(loads):.1f} on {cores} cores).")
    by_label = {r.label: r for r in results}
    one = next((r for r in results if "1 replica" in r.label), None)
    if one and by_label[direct_label].tokens_per_s < 0.5 * one.tokens_per_s:
        lines += ["", "The direct 2-thread server fell far behind the 1-thread replicas on this oversubscribed box: "
                  "llama.cpp's threads meet at a barrier inside every step, so each time the OS preempts one of "
                  "them the whole step waits (REFERENCE.md §8h measured the same collapse, 95 → 7 tok/s); a "
                  "1-thread engine has no barrier. On an idle machine the 2-thread server is the faster one."]
    lines += [
        "",
        "What to expect elsewhere: on 2 cores, two 1-thread replicas use the same cores as one 2-thread server, "
        "so replicas buy isolation and failover, not speed. Decode of a small model is memory-bound and scales "
        "with cores until memory bandwidth runs out: on a node with many cores, run replicas of 2–4 threads "
        "(`--threads` = `num_cpus` per replica) — aggregate tokens/s grows about linearly with replicas while "
        "each replica has its own cores and memory channels, and TTFT at a given load falls because each "
        "replica's queue is shorter. Capacity ≈ (tokens/s of one replica at its `--parallel`) × replicas.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
