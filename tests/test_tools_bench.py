"""slm bench against the local batching engine and against our own running server's URL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slmkit.errors import InvalidParameterError
from slmkit.tools.bench import bench_url, exact_prompt, openai_base_url, parse_concurrency

pytestmark = pytest.mark.slow
SLM = str(Path(sys.executable).with_name("slm"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_level(level: dict, concurrency: int) -> None:
    assert level["concurrency"] == level["requests"] == concurrency
    for key in ("ttft_seconds", "ttft_max_seconds", "prefill_tokens_per_second",
                "decode_tokens_per_second", "throughput_tokens_per_second", "wall_seconds"):
        assert level[key] > 0, key
    assert level["ttft_max_seconds"] >= level["ttft_seconds"]
    assert level["wall_seconds"] >= level["ttft_max_seconds"]


def test_local_bench_json_and_plot(tmp_path, slmkit_home):
    plot = tmp_path / "bench.png"
    out = subprocess.run([SLM, "bench", "smollm2", "--concurrency", "1,3", "--prompt-tokens", "40",
                          "--max-tokens", "6", "--json", "--plot", str(plot)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["kind"] == "local" and report["prompt_tokens"] == 40 and report["max_tokens"] == 6
    assert [lv["concurrency"] for lv in report["levels"]] == [1, 3]
    for level in report["levels"]:
        _check_level(level, level["concurrency"])
        # Exact prompts and ignore_eos: the counts are known in advance.
        assert level["prompt_tokens"] == 40 * level["concurrency"]
        assert level["completion_tokens"] == 6 * level["concurrency"]
        assert level["peak_rss_mb"] >= level["rss_mb"] > 50
    assert plot.read_bytes()[:8] == PNG_MAGIC


def test_bench_a_running_server_over_the_openai_api(server):
    report = bench_url(server.base, [1, 2], model=None, prompt_tokens=48, max_tokens=5).to_dict()
    assert report["kind"] == "url" and report["model"].startswith("smollm2")  # the first one listed
    for level in report["levels"]:
        _check_level(level, level["concurrency"])
        assert level["completion_tokens"] == 5 * level["concurrency"]  # from the usage chunk
        assert level["prompt_tokens"] >= 30 * level["concurrency"]  # approximate length, plus the template
        assert level["rss_mb"] is None


def test_prompts_and_flags(llm):
    for length in (2, 17, 700):
        ids = exact_prompt(llm.tokenizer, length, variant=3)
        assert len(ids) == length
    assert exact_prompt(llm.tokenizer, 20, 0) != exact_prompt(llm.tokenizer, 20, 1)
    assert parse_concurrency("1, 4,8") == [1, 4, 8]
    for bad in ("", "0", "a,b"):
        with pytest.raises(InvalidParameterError):
            parse_concurrency(bad)
    assert openai_base_url("http://h:8000/") == openai_base_url("http://h:8000/v1") == "http://h:8000/v1"
