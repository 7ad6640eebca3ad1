"""The `slm` command through a real subprocess, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SLM = [str(Path(sys.executable).with_name("slm"))]


def slm(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(SLM + list(args), input=stdin if stdin is not None else "", capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_run_one_prompt():
    result = slm("run", "smollm2", "What is 2 + 2?", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert "4" in result.stdout


def test_generate_raw_completion_with_verbose_stats():
    result = slm("generate", "smollm2", "The capital of France is", "--temperature", "0", "-n", "8", "--verbose")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" Paris.")
    for label in ("load time", "prompt:", "decode:", "time to first token", "tokens/s"):
        assert label in result.stderr


def test_piped_repl_reads_messages_and_commands_until_bye():
    stdin = "/set temperature 0\n/set max_tokens 48\nWhat is 2 + 2?\n/clear\n/bye\nThis line is never read\n"
    result = slm("run", "smollm2", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert "Set temperature to 0." in result.stdout
    assert "4" in result.stdout
    assert "Cleared the conversation." in result.stdout
    assert result.stdout.count("\n") < 30  # one answer, then /bye stopped reading


def test_piped_repl_bad_setting_is_an_error_line():
    result = slm("run", "smollm2", stdin="/set temperature hot\nWhat is 2 + 2?\n")
    assert_one_line_error(result, "temperature", "'hot'")


def test_unknown_model():
    assert_one_line_error(slm("run", "no-such-model", "hi"), "unknown model 'no-such-model'")


def test_model_name_cannot_escape_the_store():
    assert_one_line_error(slm("rm", "../../etc"), "not a valid model name")


def test_bad_flag_value_type():
    result = slm("run", "smollm2", "hi", "--temperature", "abc")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "temperature" in result.stderr


def test_bad_flag_value_range():
    assert_one_line_error(slm("run", "smollm2", "hi", "--temperature", "-1"), "temperature", ">= 0")


def test_prompt_longer_than_context():
    result = slm("run", "smollm2", "word " * 200, "--context-length", "64")
    assert_one_line_error(result, "context holds 64")


def test_pull_phi_offline_says_how_to_import():
    assert_one_line_error(slm("pull", "phi3.5-mini"), "slm import", "microsoft/Phi-3.5-mini-instruct")


def test_list_and_show():
    # A pull quantizes the Q8_0 variant and checks it: minutes on a loaded 2-core machine.
    assert slm("pull", "smollm2", timeout=900).returncode == 0
    listing = slm("list")
    assert listing.returncode == 0 and "smollm2:original" in listing.stdout and "phi3.5-moe" in listing.stdout
    shown = slm("show", "smollm2")
    assert shown.returncode == 0, shown.stderr
    for fact in ("architecture", "llama", "q4_1", "8192", "Apache-2.0", "134.5M", "SmolLM2-135M-Instruct.Q4_1.gguf"):
        assert fact in shown.stdout, fact
    template = slm("show", "smollm2", "--template")
    assert "<|im_start|>" in template.stdout
