"""slm compare: local and remote models on the same prompts, side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SLM = str(Path(sys.executable).with_name("slm"))


def _slm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SLM, *args], capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def test_local_and_remote_model_side_by_side_json(server):
    env = {"OPENAI_BASE_URL": f"{server.base}/v1", "OPENAI_API_KEY": "unused"}
    out = _slm("compare", "smollm2", "openai:smollm2", "What is 2 + 2?", "--temperature", "0",
               "--max-tokens", "12", "--json", env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["models"] == ["smollm2", "openai:smollm2"]
    [prompt] = report["prompts"]
    assert prompt["prompt"] == "What is 2 + 2?"
    local, remote = prompt["results"]
    for run in (local, remote):
        assert run["error"] is None and run["text"]
        assert 0 < run["completion_tokens"] <= 12 and run["prompt_tokens"] > 0
        assert run["ttft_seconds"] > 0 and run["seconds"] >= run["ttft_seconds"]
        if run["completion_tokens"] > 1:
            assert run["tokens_per_second"] > 0
    # The same model, greedy, same template: the remote one is our own server.
    assert local["text"] == remote["text"]
    assert local["completion_tokens"] == remote["completion_tokens"]
    assert local["prompt_tokens"] == remote["prompt_tokens"]


def test_prompts_file_markdown_and_live_view(tmp_path, slmkit_home):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Name a color."}\n'
                       '{"messages": [{"role": "user", "content": "Say hello."}]}\n')
    out = _slm("compare", "smollm2", "gemma3-270m", "--prompts", str(prompts), "-n", "6",
               "--temperature", "0", "--markdown")
    assert out.returncode == 0, out.stderr
    md = out.stdout
    assert "## Prompt 1" in md and "## Prompt 2" in md and "> Say hello." in md
    assert md.count("| smollm2 |") == 2 and md.count("| gemma3-270m |") == 2
    assert "**gemma3-270m**" in md

    live = _slm("compare", "smollm2", "gemma3-270m", "Hi", "-n", "4")
    assert live.returncode == 0, live.stderr
    assert "smollm2" in live.stdout and "gemma3-270m" in live.stdout and "TTFT" in live.stdout


def test_bad_prompts_file_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt here"}\n')
    out = _slm("compare", "smollm2", "--prompts", str(bad))
    assert out.returncode == 1 and "bad.jsonl:1" in out.stderr and "Traceback" not in out.stderr


def test_a_forgotten_prompt_is_an_error_not_a_one_model_run():
    out = _slm("compare", "smollm2", "gemma3-270m")
    assert out.returncode == 1 and "names a model, so there is no prompt" in out.stderr
    assert "Traceback" not in out.stderr
