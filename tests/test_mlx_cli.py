"""MLX conversions through the CLI (`slm convert --to mlx`, `slm show`, `slm generate`), the server
(real openai client) and `slm compare` (torch vs MLX fp32 vs MLX fp16 of one tiny Phi-3), plus the
one-line errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

from hf_fixtures import write_sp_checkpoint  # noqa: E402
from server_process import slm  # noqa: E402

from slmkit import LLM, SamplingParams  # noqa: E402

MODELS = {"tiny-mlx": "torch", "tiny-mlx-mlx-fp32": "mlx", "tiny-mlx-mlx-fp16": "mlx"}


@pytest.fixture(scope="module")
def tiny_store(slmkit_home, tmp_path_factory):
    """A tiny longrope Phi-3 imported as `tiny-mlx`, converted by the CLI to MLX fp32 and fp16."""
    folder = write_sp_checkpoint(tmp_path_factory.mktemp("mlx-cli") / "tiny-phi3", longrope=True, seed=6)
    for name in MODELS:
        slm("rm", name, check=False)
    slm("import", str(folder), "--name", "tiny-mlx")
    for precision in ("fp32", "fp16"):
        done = slm("convert", "tiny-mlx", "--to", "mlx", "--precision", precision)
        assert f"stored tiny-mlx-mlx-{precision}" in done.stdout
    return folder


def test_show_lists_mlx_among_the_engines(tiny_store):
    hf = json.loads(slm("show", "tiny-mlx", "--json").stdout)
    assert [e["engine"] for e in hf["engines"]] == ["torch", "transformers", "mlx"]  # mlx-lm reads HF folders too
    for precision in ("fp32", "fp16"):
        facts = json.loads(slm("show", f"tiny-mlx-mlx-{precision}", "--json").stdout)
        assert facts["engines"] == [{"engine": "mlx", "installed": True, "extra": "mlx"}]
        assert facts["architecture"] == "phi3" and facts["quantization"] == f"mlx {precision}"
        assert facts["parameters"] == hf["parameters"]
    assert "mlx (installed)" in slm("show", "tiny-mlx-mlx-fp32").stdout


def test_generate_gives_the_same_text_on_torch_and_mlx(tiny_store):
    outputs = {name: slm("generate", name, "What is 2 + 2?", "-n", "16", "--temperature", "0", "--ignore-eos").stdout
               for name in MODELS}
    assert len(set(outputs.values())) == 1, outputs
    mlx_hf = slm("generate", "tiny-mlx", "--backend", "mlx", "What is 2 + 2?", "-n", "16", "--temperature", "0",
                 "--ignore-eos").stdout
    assert mlx_hf == outputs["tiny-mlx"]


def test_compare_torch_and_mlx_side_by_side(tiny_store):
    done = slm("compare", *MODELS, "What is 2 + 2?", "--json", "--temperature", "0", "--ignore-eos", "-n", "12")
    results = {r["model"]: r for r in json.loads(done.stdout)["prompts"][0]["results"]}
    assert all(r["error"] is None and r["completion_tokens"] == 12 for r in results.values()), results
    assert len({r["text"] for r in results.values()}) == 1, results
    assert len({r["prompt_tokens"] for r in results.values()}) == 1


def test_server_serves_the_mlx_conversion_to_the_openai_client(tiny_store):
    from openai import OpenAI
    from server_process import ServerProcess

    questions = [[{"role": "user", "content": "Hello! How can I"}], [{"role": "user", "content": "What is 2 + 2?"}]]
    params = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
    with LLM("tiny-mlx", backend="torch", max_sequences=1, context_length=256) as reference:
        wants = [reference.chat(q, params).text for q in questions]
    proc = ServerProcess("--model", "tiny-mlx-mlx-fp16", "--parallel", "2", "--context-length", "256")
    try:
        client = OpenAI(base_url=f"{proc.base}/v1", api_key="none")
        for question, want in zip(questions, wants):
            reply = client.chat.completions.create(model="tiny-mlx-mlx-fp16", messages=question, max_tokens=10,
                                                   temperature=0, extra_body={"ignore_eos": True})
            assert reply.choices[0].message.content == want
        streams = [client.chat.completions.create(model="tiny-mlx-mlx-fp16", messages=q, max_tokens=10, temperature=0,
                                                  stream=True, extra_body={"ignore_eos": True}) for q in questions]
        texts = ["".join(c.choices[0].delta.content or "" for c in stream if c.choices) for stream in streams]
        assert texts == wants
    finally:
        proc.stop()


def test_cli_errors_are_one_line(tiny_store, tmp_path):
    existing = slm("convert", "tiny-mlx", "--to", "mlx", "--precision", "fp32", check=False)
    bad = slm("convert", "tiny-mlx", "--to", "mlx", "--precision", "q4_k_m", check=False)
    torch_on_mlx = slm("generate", "tiny-mlx-mlx-fp32", "--backend", "torch", "Hi", check=False)
    for done, words in ((existing, "already in the store"), (bad, "MLX has no precision"),
                        (torch_on_mlx, "is an MLX folder")):
        assert done.returncode != 0 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
