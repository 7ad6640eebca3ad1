"""Bounded load (issue 12): a mixed crowd of clients, some leaving mid-stream, some sending bad
bodies. Every request ends cleanly, every answer is its own, and nothing is left held after.

The full figure (200 requests, 32 clients) is `benchmarks/load.py`; this is its small version.
"""

from __future__ import annotations

import asyncio

import pytest
from server_process import ServerProcess

from slmkit.tools.loadmix import plan, process_stats, reference_answers, run_mix

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def load_server(slmkit_home):
    proc = ServerProcess("--model", "smollm2", "--parallel", "8", "--context-length", "512", "--batch-invariant",
                         "--keep-alive", "-1")
    yield proc
    proc.stop()


def test_mixed_load_with_cancellations_and_bad_bodies(load_server):
    jobs = plan(60, seed=1)
    assert sum(j.cancel_after is not None for j in jobs) >= 6 and sum(j.bad_body for j in jobs) >= 1
    references = asyncio.run(reference_answers(load_server.base, jobs, max_tokens=16))
    before = process_stats(load_server.proc.pid)
    report = asyncio.run(run_mix(load_server.base, jobs, concurrency=16, max_tokens=16, timeout=240,
                                 references=references))
    assert report.problems == [], report.problems
    statuses = report.by_status()
    assert set(statuses) <= {"200", "400", "cancelled"}, statuses
    assert statuses.get("400", 0) == sum(j.bad_body for j in jobs)
    metrics = load_server.wait_idle(timeout=30)  # running, queue and KV cells back to zero
    assert metrics
    after = process_stats(load_server.proc.pid)
    assert after["fds"] <= before["fds"] + 8, (before, after)
    print("\nload:", report.summary(), "rss MiB", round(before["rss_mib"]), "->", round(after["rss_mib"]))
