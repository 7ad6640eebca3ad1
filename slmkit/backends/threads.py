"""Contention-aware thread counts for CPU runners.

llama.cpp's workers spin at every barrier, so one thread more than the cores actually free makes
each step wait for a thread the OS has descheduled: measured here on 2 cores with one other busy
process, decode falls from 95 to 7 tokens/s at 2 threads but runs at 51 at 1. So a runner left to
choose its own threads (no ``threads=``) asks `ThreadGovernor` between steps, which counts the
cores other processes keep busy (``/proc/stat`` minus this process's own CPU time) and answers
with the cores left; a step far slower than the recent ones triggers a re-check at once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

RECHECK_SECONDS = 1.0  # how often the free cores are counted while running
MIN_SAMPLE_SECONDS = 0.1  # a slow step re-checks early, but over at least this long a window
SLOW_STEP_FACTOR = 4.0  # a step this many times the recent per-token cost means contention now
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def allowed_cores() -> int:
    """The cores this process may run on (respects taskset / cgroup CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def choose_threads(cores: int, others_busy: float, maximum: int | None = None) -> int:
    """Threads for `cores` allowed cores when other processes keep `others_busy` of them busy:
    the free cores, rounded to the nearest whole one, at least 1, at most `maximum`."""
    free = cores - max(0.0, others_busy)
    return max(1, min(maximum or cores, cores, int(free + 0.5)))


@dataclass
class CpuSample:
    busy: float  # CPU-seconds spent busy by every process, all cores together
    own: float  # CPU-seconds of this process
    wall: float

    @classmethod
    def now(cls) -> "CpuSample | None":
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None  # not Linux: keep the configured threads
        # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
        busy = sum(fields[:8]) - fields[3] - fields[4]
        times = os.times()
        return cls(busy / _CLOCK_TICKS, times.user + times.system, time.monotonic())

    def others_busy_since(self, earlier: "CpuSample") -> float:
        """Cores other processes kept busy on average between the two samples."""
        wall = self.wall - earlier.wall
        if wall <= 0:
            return 0.0
        return max(0.0, (self.busy - earlier.busy) - (self.own - earlier.own)) / wall


class ThreadGovernor:
    """Between steps: `threads()` gives the count to run the next step with; `step_done` reports
    how long a step of n tokens took."""

    def __init__(self, maximum: int | None = None, *, cores: int | None = None):
        self.cores = cores or allowed_cores()
        self.maximum = min(maximum or self.cores, self.cores)
        self.current = self.maximum
        self._sample = CpuSample.now()
        self._cost: float | None = None  # recent seconds per token at the current count
        self._recheck_now = False
        self.changes = 0

    def threads(self) -> int:
        sample = self._sample and CpuSample.now()
        due = RECHECK_SECONDS if not self._recheck_now else MIN_SAMPLE_SECONDS
        if sample is None or sample.wall - self._sample.wall < due:
            return self.current
        wanted = choose_threads(self.cores, sample.others_busy_since(self._sample), self.maximum)
        self._sample, self._recheck_now = sample, False
        if wanted != self.current:
            self.current, self._cost = wanted, None
            self.changes += 1
        return self.current

    def step_done(self, tokens: int, seconds: float) -> None:
        per_token = seconds / max(1, tokens)
        if self._cost is not None and per_token > SLOW_STEP_FACTOR * self._cost:
            self._recheck_now = True
        self._cost = per_token if self._cost is None else 0.8 * self._cost + 0.2 * per_token
