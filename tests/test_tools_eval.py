"""slm eval and the scorer under it, end to end on the bundled models."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slmkit import LLM
from slmkit.backends.base import Chunk
from slmkit.engine.scoring import log_softmax_rows
from slmkit.errors import InvalidRequestError
from slmkit.tools.evaluate import evaluate, load_task_data, perplexity

pytestmark = pytest.mark.slow
SLM = str(Path(sys.executable).with_name("slm"))


def test_all_logits_chunks_score_like_one_token_at_a_time(llm):
    ids = llm.encode_prompt("It is a truth universally acknowledged, that a single man must be in want of a wife.")
    with llm.scorer() as scorer:
        whole = scorer.token_logprobs(ids)
        scorer.chunk_tokens = 4  # several all_logits forwards, each continuing the last
        chunked = scorer.token_logprobs(ids)
        context, rest = ids[:6], ids[6:]
        continued = scorer.continuation_logprobs(context, [rest, rest[:2]])
        seq_id = scorer.seq_id
        llm.runner.free(seq_id)
        one_by_one = [log_softmax_rows(llm.runner.forward([Chunk(seq_id, [t], i)]))[0][ids[i + 1]]
                      for i, t in enumerate(ids[:-1])]
    assert whole.shape == (len(ids) - 1,) and np.all(whole < 0)
    np.testing.assert_allclose(whole, one_by_one, atol=1e-3)
    np.testing.assert_allclose(chunked, whole, atol=1e-3)
    np.testing.assert_allclose(continued[0], whole[5:], atol=1e-3)
    np.testing.assert_allclose(continued[1], whole[5:7], atol=1e-3)


def test_perplexity_is_lower_for_real_text_than_for_shuffled_words(llm):
    documents = load_task_data("perplexity")
    real = perplexity(llm, documents)
    rng = random.Random(0)
    shuffled_docs = []
    for doc in documents:
        words = doc["text"].split()
        rng.shuffle(words)
        shuffled_docs.append({**doc, "text": " ".join(words)})
    shuffled = perplexity(llm, shuffled_docs)
    assert math.isfinite(real.score) and real.score > 1
    assert real.metrics["tokens"] == sum(item["tokens"] for item in real.items) > 300
    assert shuffled.score > 2 * real.score, (real.score, shuffled.score)


def test_multiple_choice_records_every_question(llm):
    result = evaluate(llm, ["multiple-choice"], limit=6).results[0]
    assert result.metric == "accuracy" and 0 <= result.score <= 1
    assert len(result.items) == 6
    for item in result.items:
        assert len(item["logprobs"]) == len(item["choices"]) and all(lp < 0 for lp in item["logprobs"])
        assert item["predicted"] == int(np.argmax(item["logprobs"]))
        assert item["correct"] == (item["predicted"] == item["answer"])
    assert result.score == sum(i["correct"] for i in result.items) / 6
    # "What is the capital of France?": even a 135M model knows.
    assert result.items[0]["correct"]


def test_cli_eval_json_and_compare(slmkit_home):
    out = subprocess.run([SLM, "eval", "smollm2", "--task", "perplexity", "--task", "translation",
                          "--task", "summarization", "--limit", "2", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["model"].startswith("smollm2")
    tasks = report["tasks"]
    assert set(tasks) == {"perplexity", "translation", "summarization"}
    assert tasks["perplexity"]["higher_is_better"] is False and tasks["perplexity"]["score"] > 1
    assert 0 <= tasks["translation"]["score"] <= 100 and len(tasks["translation"]["items"]) == 2
    assert all(item["hypothesis"] for item in tasks["translation"]["items"])
    rouge = tasks["summarization"]["metrics"]
    assert all(0 <= rouge[k] <= 1 for k in ("rouge1", "rouge2", "rougeL")) and rouge["rouge1"] > 0

    side = subprocess.run([SLM, "eval", "--compare", "smollm2", "gemma3-270m", "--task", "perplexity",
                           "--limit", "1"], capture_output=True, text=True, timeout=600)
    assert side.returncode == 0, side.stderr
    header = side.stdout.splitlines()[0]
    assert "smollm2" in header and "gemma3-270m" in header and "perplexity" in side.stdout


def test_remote_models_cannot_score_but_can_translate(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.base}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    remote = LLM("openai:smollm2")
    with pytest.raises(InvalidRequestError, match="log-probability of every prompt token"):
        evaluate(remote, ["perplexity"])
    report = evaluate(remote, limit=1)
    assert [r.task for r in report.results] == ["translation", "summarization"]
    assert report.results[0].items[0]["hypothesis"]
