"""Contention-aware threads: the policy, and the governor's re-checks, on made-up CPU samples."""

from __future__ import annotations

import pytest

from slmkit.backends import threads
from slmkit.backends.threads import CpuSample, ThreadGovernor, choose_threads


@pytest.mark.parametrize("cores, others, maximum, want", [
    (2, 0.0, None, 2), (2, 1.0, None, 1), (2, 0.4, None, 2), (2, 0.6, None, 1), (2, 2.5, None, 1),
    (8, 3.0, None, 5), (8, 0.0, 4, 4), (8, 7.9, None, 1), (4, -1.0, None, 4),
])
def test_choose_threads_takes_the_free_cores(cores, others, maximum, want):
    assert choose_threads(cores, others, maximum) == want


def test_others_busy_excludes_our_own_cpu_time():
    a = CpuSample(busy=100.0, own=10.0, wall=0.0)
    b = CpuSample(busy=104.0, own=12.0, wall=2.0)  # 4 CPU-s busy in 2 s, 2 of them ours
    assert b.others_busy_since(a) == 1.0


def test_governor_follows_contention_and_rechecks_early_after_a_slow_step(monkeypatch):
    samples = iter([CpuSample(0.0, 0.0, 0.0),      # construction
                    CpuSample(0.5, 0.5, 0.5),      # too soon: no decision
                    CpuSample(4.0, 2.0, 2.0),      # another process kept 1 core busy
                    CpuSample(4.1, 2.05, 2.05),    # a slow step asks to re-check, but 50 ms is too short
                    CpuSample(4.3, 2.2, 2.2),      # 0.2 s later: quiet again
                    ])
    monkeypatch.setattr(threads.CpuSample, "now", classmethod(lambda cls: next(samples)))
    gov = ThreadGovernor(cores=2)
    assert gov.threads() == 2
    assert gov.threads() == 1 and gov.changes == 1
    gov.step_done(1, 0.01)
    gov.step_done(1, 0.01)
    gov.step_done(1, 0.2)  # 20x the recent cost
    assert gov.threads() == 1
    assert gov.threads() == 2 and gov.changes == 2


def test_without_proc_stat_the_configured_count_stays(monkeypatch):
    monkeypatch.setattr(threads.CpuSample, "now", classmethod(lambda cls: None))
    gov = ThreadGovernor(3, cores=4)
    assert gov.threads() == 3
