"""Shared fixtures. Every test run gets its own model store, so nothing touches ~/.slmkit."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before slmkit is imported anywhere, and inherited by CLI subprocesses. Converter tool
# environments (the OpenVINO exporter's venv, ~1.6 GB, made by `make install`) are a cache, not
# store content: tests reuse the user's instead of installing one per run.
os.environ.setdefault("SLMKIT_TOOLS", str(Path(os.environ.get("SLMKIT_HOME") or Path.home() / ".slmkit") / "tools"))
_HOME = Path(tempfile.mkdtemp(prefix="slmkit-test-home-"))
os.environ["SLMKIT_HOME"] = str(_HOME)


@pytest.fixture(scope="session")
def slmkit_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from slmkit.store.bundled import locate_smollm2

    return locate_smollm2()


@pytest.fixture(scope="session")
def llm(slmkit_home):
    """The bundled default model through the public API (pulled into the test store once)."""
    from slmkit import LLM

    model = LLM("smollm2:original", context_length=2048)
    yield model
    model.close()


@pytest.fixture(scope="session")
def server(slmkit_home):
    """One real `slm serve` for the API tests: SmolLM2 loaded, 16 sequences together."""
    from server_process import ServerProcess

    proc = ServerProcess("--model", "smollm2", "--parallel", "16", "--context-length", "2048")
    yield proc
    code = proc.stop()
    # SIGTERM: a graceful shutdown, then exit 0 (what an orchestrator reads as a clean stop).
    assert code == 0 and "Application shutdown complete" in proc.logs(), proc.logs()
