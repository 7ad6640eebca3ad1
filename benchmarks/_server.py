"""A real `slm serve` for the reliability benchmarks (load, soak): start, wait, measure, stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SLM = str(Path(sys.executable).with_name("slm"))


class SlmServer:
    def __init__(self, *args: str, ready_timeout: float = 180):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="slm-bench-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([SLM, "serve", "--port", str(self.port), *args], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slm serve exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"slm serve did not become healthy:\n{self.logs()}")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def held(self) -> dict[str, float]:
        """Running and waiting sequences and KV cells held by running ones, from /metrics."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        held = {"running": 0.0, "waiting": 0.0, "kv_used": 0.0}
        names = {"slmkit_running_sequences{": "running", "slmkit_queue_depth{": "waiting",
                 "slmkit_kv_cache_used_cells{": "kv_used"}
        for line in text.splitlines():
            for prefix, key in names.items():
                if line.startswith(prefix):
                    held[key] += float(line.rpartition(" ")[2])
        return held

    def wait_idle(self, timeout: float = 30) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            held = self.held()
            if not any(held.values()) or time.monotonic() > deadline:
                return held
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
