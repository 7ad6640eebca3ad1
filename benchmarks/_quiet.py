"""Measuring on a shared machine: how much of the CPU other processes use, waiting for them to
leave, and a lock that keeps cooperating work out of a timed section.

On 2 cores llama.cpp's spinning threads slow down sharply when they lose one, so every timed
benchmark checks the CPU first (`wait_until_quiet`), counts what others used while it measured
(`ForeignCpu`), and holds `quiet_section()` meanwhile: other work that wants to stay out of the
way (a teammate's test run) takes the same lock shared, ``flock -s QUIET_LOCK cmd``, and waits.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

FOREIGN_CPU_LIMIT = 0.10  # share of the machine other processes may use while we measure
QUIET_LOCK = Path(os.environ.get("SLM_QUIET_LOCK", str(Path.home() / ".cache" / "slmkit" / "quiet.lock")))


@contextmanager
def quiet_section():
    """Hold the quiet lock exclusively: cooperating work (holding it shared) finishes first, and
    new work waits until the section ends."""
    QUIET_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(QUIET_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # exited meanwhile
    return found


class ForeignCpu:
    """CPU time used by processes other than the server and this script while measuring: on a
    shared 2-core machine any of it skews the numbers, so such measurements are redone."""

    def __init__(self, server_pid: int | None = None):
        self.server_pid = server_pid
        self.start = self._sample()

    @staticmethod
    def _machine_busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait; guests are in user
        return busy / os.sysconf("SC_CLK_TCK")

    def _ours(self) -> float:
        total = sum(os.times()[:2])
        for p in tree_pids(self.server_pid) if self.server_pid else []:
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError, IndexError):
                continue
        return total

    def _sample(self) -> tuple[float, float, float]:
        return time.monotonic(), self._machine_busy(), self._ours()

    def share(self) -> float:
        """Foreign CPU seconds / available CPU seconds since creation."""
        end = self._sample()
        wall, busy, ours = (b - a for a, b in zip(self.start, end))
        return max(0.0, busy - ours) / (wall * (os.cpu_count() or 1))


def wait_until_quiet(console: Console, max_wait: float, server_pid: int | None = None) -> None:
    """Wait until other processes leave the CPU alone (3 s probes), or give up after max_wait."""
    deadline, announced = time.monotonic() + max_wait, False
    while True:
        probe = ForeignCpu(server_pid)
        time.sleep(3)
        share = probe.share()
        if share <= FOREIGN_CPU_LIMIT:
            return
        if time.monotonic() > deadline:
            console.print(f"  [yellow]still busy after {max_wait:.0f} s ({share:.0%}); "
                          "measuring anyway[/yellow]")
            return
        if not announced:
            console.print(f"  waiting for other processes to leave the CPU ({share:.0%} busy) ...")
            announced = True
