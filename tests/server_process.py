"""Real `slm` subprocesses: one command (`slm`), or an `slm serve` on 127.0.0.1 for the server tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SLM = str(Path(sys.executable).with_name("slm"))


def slm(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run one `slm` command (``env`` on top of ours); with ``check``, assert it exits 0."""
    done = subprocess.run([SLM, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 120):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="slm-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [SLM, "serve", "--port", str(self.port), *args], stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slm serve exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"slm serve did not become healthy:\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def metrics(self, headers: dict | None = None) -> dict[str, float]:
        """Unlabelled view of /metrics: ``{"name{labels}": value}``."""
        text = httpx.get(f"{self.base}/metrics", headers=headers or {}, timeout=10).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def wait_idle(self, timeout: float = 20.0, headers: dict | None = None) -> dict[str, float]:
        """Poll /metrics until no sequence runs or waits and no KV cell is held by a running one."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics(headers)
            running = sum(v for k, v in m.items() if k.startswith("slmkit_running_sequences{"))
            used = sum(v for k, v in m.items() if k.startswith("slmkit_kv_cache_used_cells{"))
            waiting = sum(v for k, v in m.items() if k.startswith("slmkit_queue_depth{"))
            if running == used == waiting == 0:
                return m
            assert time.monotonic() < deadline, f"still busy: running={running} used={used} waiting={waiting}"
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
