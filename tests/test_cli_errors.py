"""Bad input on the command line: one line saying what to do, exit 1, never a traceback.

Each case was found by trying slmkit as a new user would (issue 12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SLM = str(Path(sys.executable).with_name("slm"))

CASES = [
    (["serve", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["serve", "--log-level", "verbose"], "--log-level: 'verbose' is not one of"),
    (["compare", "smollm2", "smollm2", "--prompts", "missing.jsonl"], "prompts: no such file: missing.jsonl"),
    (["translate", "--to", "de", "missing.txt"], "no such file: missing.txt"),
    (["translate", "--to", "zz", "Good morning."], "unknown language 'zz'"),
    (["speak", "--voice", "klingon", "hello"], "no voice 'klingon'"),
    (["generate", "smollm2", "hi", "--temperature", "50"], "temperature: must be <= 2.0"),
    (["generate", "smollm2", "hi", "-n", "1000000000"], "max_tokens: must be <="),
    (["generate", "smollm2", "hi", "-n", "100000"], "lower max_tokens to at most"),
    (["generate", "smollm2", "hi", "--threads", "0"], "threads: must be an integer from 1"),
    (["generate", "smollm2", "hi", "--context-length", "999999"], "more than the 8192 tokens this model was trained for"),
    (["generate", "smollm2", "hi", "--seed", "-5"], "seed: must be >= 0"),
    (["run", "smollm2", "hi", "--top-p", "0"], "top_p: must be > 0.0"),
    (["serve", "--replicas", "2"], "--replicas, --autoscale and --ray-address need --ray"),
    (["serve", "--ray", "--autoscale", "4"], "'4' is not MIN:MAX"),
    (["serve", "--ray", "--autoscale", "3:1"], "need 0 <= MIN <= MAX"),
]


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    result = subprocess.run([SLM, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_seed_minus_one_means_a_random_seed(tmp_path):
    """llama.cpp's and Ollama's -1: it samples (twice differently, most likely) and exits 0."""
    result = subprocess.run([SLM, "generate", "smollm2", "The capital of France is", "--seed", "-1", "-n", "4",
                             "--temperature", "0.8"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip()


def test_python_api_refuses_a_list_of_prompts(llm):
    from slmkit.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="call generate once per prompt"):
        llm.generate(["a", "b"])


@pytest.mark.parametrize("args", [["generate", "smollm2", "hi", "--backend", "vllm"], ["serve", "--backend", "vllm"]])
def test_vllm_backend_needs_cuda_and_vllm(args, tmp_path):
    from slmkit.backends.vllm import missing_requirements

    if not missing_requirements():
        pytest.skip("this machine has CUDA and vllm")
    test_bad_input_is_one_clear_line(args, "--backend vllm needs CUDA and vllm", tmp_path)
