"""A mixed load against a running `slm serve`, with every answer checked.

What a server in front of users sees at once: OpenAI chat and completions, Ollama chat and
generate, embeddings, streaming and not, clients that leave mid-stream, and malformed bodies.
Every greedy answer is compared with the same request's answer when the server was idle (the
server runs with ``--batch-invariant``, so a correct answer is bit-identical under any load): an
answer that went to the wrong request cannot pass. Used by the load test, `benchmarks/load.py`
and `benchmarks/soak.py`.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

KINDS = ("chat", "completion", "ollama_chat", "ollama_generate", "embedding")
SUBJECTS = ("a fox", "the sea", "a robot", "the moon", "a baker", "a river", "an owl", "a city", "a violin",
            "a garden", "the wind", "a lighthouse")


@dataclass(frozen=True)
class Job:
    """One request of the mix: what to send and how it is expected to end."""

    index: int
    kind: str
    subject: str
    stream: bool
    cancel_after: int | None = None  # chunks read before the client leaves
    bad_body: bool = False

    @property
    def key(self) -> tuple[str, str, bool]:
        return self.kind, self.subject, self.stream


@dataclass
class Outcome:
    job: Job
    status: int | None  # None: no answer (a hang past the timeout, or a transport error)
    seconds: float
    answer: str | list[float] | None = None
    problem: str | None = None  # why this outcome is wrong, if it is


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        return [f"#{o.job.index} {o.job.kind}: {o.problem}" for o in self.outcomes if o.problem]

    def by_status(self) -> dict[str, int]:
        counts = Counter("cancelled" if o.job.cancel_after is not None and o.status == 200 else str(o.status)
                         for o in self.outcomes)
        return dict(sorted(counts.items()))

    def latency(self, quantile: float) -> float:
        times = sorted(o.seconds for o in self.outcomes if o.status == 200 and o.job.cancel_after is None)
        if not times:
            return 0.0
        return times[min(len(times) - 1, int(quantile * len(times)))]

    def summary(self) -> dict:
        return {"requests": len(self.outcomes), "by_status": self.by_status(),
                "cancelled": sum(o.job.cancel_after is not None for o in self.outcomes),
                "bad_bodies": sum(o.job.bad_body for o in self.outcomes),
                "problems": len(self.problems), "p50_s": round(self.latency(0.5), 3),
                "p99_s": round(self.latency(0.99), 3), "wall_s": round(self.wall_seconds, 1)}


def plan(count: int, *, seed: int = 0, cancel_share: float = 0.2, bad_share: float = 0.05) -> list[Job]:
    """`count` jobs: kinds in turn, a fixed share cancelled mid-stream or with a bad body."""
    rng = random.Random(seed)
    jobs = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        roll = rng.random()
        bad = roll < bad_share
        cancel = not bad and kind != "embedding" and roll < bad_share + cancel_share
        stream = cancel or (kind != "embedding" and rng.random() < 0.5)
        jobs.append(Job(i, kind, rng.choice(SUBJECTS), stream, rng.randint(1, 3) if cancel else None, bad))
    return jobs


def _request(job: Job, model: str, max_tokens: int) -> tuple[str, dict]:
    prompt = f"Write one sentence about {job.subject}."
    if job.kind == "chat":
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                "max_tokens": max_tokens, "stream": job.stream}
        path = "/v1/chat/completions"
    elif job.kind == "completion":
        body = {"model": model, "prompt": f"A short story about {job.subject}:", "temperature": 0,
                "max_tokens": max_tokens, "stream": job.stream}
        path = "/v1/completions"
    elif job.kind == "ollama_chat":
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": job.stream,
                "options": {"temperature": 0, "num_predict": max_tokens}}
        path = "/api/chat"
    elif job.kind == "ollama_generate":
        body = {"model": model, "prompt": f"A poem about {job.subject}:", "raw": True, "stream": job.stream,
                "options": {"temperature": 0, "num_predict": max_tokens}}
        path = "/api/generate"
    else:
        body = {"model": "all-minilm", "input": [prompt]}
        path = "/v1/embeddings"
    if job.bad_body:  # a value out of range, or of the wrong type (Ollama ignores unknown fields)
        if job.kind.startswith("ollama"):
            body = {**body, "options": {"temperature": 7}} if job.index % 2 else {**body, "options": "fast"}
        elif job.kind == "embedding":
            body = {**body, "dimensions": 0}
        else:
            body = {**body, "temperature": 7} if job.index % 2 else {**body, "max_tokens": -3}
    return path, body


def _text_of(kind: str, data: dict) -> str:
    if kind == "chat":
        choice = data["choices"][0] if data.get("choices") else {}
        return (choice.get("delta") or choice.get("message") or {}).get("content") or ""
    if kind == "completion":
        return data["choices"][0].get("text", "") if data.get("choices") else ""
    if kind == "ollama_chat":
        return data.get("message", {}).get("content", "")
    return data.get("response", "")


async def run_job(client: httpx.AsyncClient, job: Job, model: str, max_tokens: int, timeout: float) -> Outcome:
    path, body = _request(job, model, max_tokens)
    started = time.perf_counter()
    try:
        return await asyncio.wait_for(_send(client, job, path, body, started), timeout)
    except asyncio.TimeoutError:
        return Outcome(job, None, time.perf_counter() - started, problem=f"no answer within {timeout:g} s (a hang)")
    except httpx.HTTPError as exc:
        return Outcome(job, None, time.perf_counter() - started, problem=f"transport error: {exc!r}")


async def _send(client, job: Job, path: str, body: dict, started: float) -> Outcome:
    if not job.stream:
        r = await client.post(path, json=body)
        return _judge(job, r.status_code, r.headers, r.text, time.perf_counter() - started, streamed=None)
    pieces: list[str] = []
    async with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            text = (await r.aread()).decode("utf-8", "replace")
            return _judge(job, r.status_code, r.headers, text, time.perf_counter() - started, streamed=None)
        chunks = 0
        async for line in r.aiter_lines():
            if not line.strip() or line.strip() == "data: [DONE]":
                continue
            data = json.loads(line[6:] if line.startswith("data: ") else line)
            if "error" in data:
                return Outcome(job, 200, time.perf_counter() - started, problem=f"error in stream: {data['error']}")
            pieces.append(_text_of(job.kind, data))
            chunks += 1
            if job.cancel_after is not None and chunks >= job.cancel_after:
                break  # leaving: the server must abort this request and free its KV cells
    return _judge(job, 200, r.headers, "", time.perf_counter() - started, streamed="".join(pieces))


def _judge(job: Job, status: int, headers, text: str, seconds: float, *, streamed: str | None) -> Outcome:
    out = Outcome(job, status, seconds)
    if status in (429, 503):
        if "retry-after" not in headers:
            out.problem = f"{status} without Retry-After"
        return out
    if job.bad_body:
        if status != 400:
            out.problem = f"a bad body got {status}, not 400: {text[:200]}"
        return out
    if status != 200:
        out.problem = f"unexpected {status}: {text[:200]}"
        return out
    if streamed is not None:
        out.answer = streamed
        return out
    data = json.loads(text)
    out.answer = data["data"][0]["embedding"] if job.kind == "embedding" else _text_of(job.kind, data)
    return out


async def run_mix(base_url: str, jobs: list[Job], *, concurrency: int, model: str = "smollm2",
                  max_tokens: int = 24, timeout: float = 300.0, headers: dict | None = None,
                  references: dict | None = None) -> Report:
    """Run `jobs` with at most `concurrency` in flight; check answers against `references`
    (from `reference_answers`) where given."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    report = Report()
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, headers=headers) as client:
        async def one(job):
            async with gate:
                return await run_job(client, job, model, max_tokens, timeout)

        started = time.perf_counter()
        report.outcomes = await asyncio.gather(*(one(j) for j in jobs))
        report.wall_seconds = time.perf_counter() - started
    if references is not None:
        for out in report.outcomes:
            _compare(out, references.get(out.job.key))
    return report


def _compare(out: Outcome, reference) -> None:
    if out.problem or out.answer is None or reference is None or out.status != 200:
        return
    if out.job.cancel_after is not None:  # what arrived before leaving must begin the real answer
        if not reference.startswith(out.answer):
            out.problem = f"cancelled stream's text {out.answer[:60]!r} is not the start of {reference[:60]!r}"
        return
    if out.job.kind == "embedding":
        if max(abs(a - b) for a, b in zip(out.answer, reference)) > 1e-5:
            out.problem = "embedding differs from the idle server's"
    elif out.answer != reference:
        out.problem = f"answer {out.answer[:60]!r} is not this request's ({reference[:60]!r}): wrong or changed"


async def reference_answers(base_url: str, jobs: list[Job], *, model: str = "smollm2", max_tokens: int = 24,
                            headers: dict | None = None) -> dict:
    """Each distinct request once, alone, on the idle server."""
    references = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=300, headers=headers) as client:
        for job in jobs:
            if job.bad_body or job.key in references:
                continue
            clean = Job(job.index, job.kind, job.subject, job.stream)
            out = await run_job(client, clean, model, max_tokens, 300)
            if out.problem:
                raise RuntimeError(f"reference for {job.key} failed: {out.problem}")
            references[job.key] = out.answer
    return references


def process_stats(pid: int) -> dict[str, float]:
    """Resident memory (MiB) and open file descriptors of a process (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {"rss_mib": rss_kib / 1024, "fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points (units of y per unit of x)."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0
