"""`--device qnn` is refused in one line, before anything loads: measured here, onnxruntime-qnn
2.7.0's Linux x86_64 wheel has no libQnnCpu.so and its HTP emulator takes 4 of the 31 nodes
of a `slm convert --to onnx` model (README: Qualcomm NPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slmkit import LLM
from slmkit.errors import BackendUnavailableError

SLM = str(Path(sys.executable).with_name("slm"))


def test_the_python_api_refuses_qnn(smollm2_path):
    for backend in ("auto", "ortgenai"):
        with pytest.raises(BackendUnavailableError, match="--device qnn is not supported.*libQnnCpu.so"):
            LLM(str(smollm2_path), backend=backend, device="qnn")


@pytest.mark.parametrize("command", [["run", "{model}", "Hi"], ["generate", "{model}", "Hi"], ["serve"]])
def test_the_cli_refuses_qnn_in_one_line(smollm2_path, command):
    args = [a.format(model=smollm2_path) for a in command]
    done = subprocess.run([SLM, *args, "--device", "qnn"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--device qnn is not supported" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
