"""`slm convert` and the converted models through the CLI, the server (real openai client) and
`slm compare` (torch vs GGUF vs ONNX of one tiny Phi-3 side by side), plus the engines `slm show`
lists and the one-line errors."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("onnxruntime_genai")

from hf_fixtures import write_sp_checkpoint  # noqa: E402
from server_process import slm  # noqa: E402

from slmkit import LLM, SamplingParams  # noqa: E402
from slmkit.errors import BackendUnavailableError  # noqa: E402

ENGINES = {"tiny": "torch", "tiny-gguf-fp32": "llamacpp", "tiny-onnx-fp32": "ortgenai"}


@pytest.fixture(scope="module")
def tiny_store(slmkit_home, tmp_path_factory):
    """A tiny Phi-3 imported as `tiny`, then converted by the CLI to GGUF and ONNX fp32."""
    folder = write_sp_checkpoint(tmp_path_factory.mktemp("cli") / "tiny-phi3", seed=5)
    slm("rm", "tiny", check=False)
    for name in ENGINES:
        slm("rm", name, check=False)
    slm("import", str(folder), "--name", "tiny")
    gguf = slm("convert", "tiny", "--to", "gguf", "--precision", "fp32")
    onnx = slm("convert", "tiny", "--to", "onnx", "--precision", "fp32")
    assert "stored tiny-gguf-fp32" in gguf.stdout and "stored tiny-onnx-fp32" in onnx.stdout
    return folder


def test_convert_stores_models_that_show_their_engine(tiny_store):
    for name, engine in ENGINES.items():
        facts = json.loads(slm("show", name, "--json").stdout)
        assert facts["engines"][0] == {"engine": engine, "installed": True, "extra": facts["engines"][0]["extra"]}
    gguf = json.loads(slm("show", "tiny-gguf-fp32", "--json").stdout)
    assert [e["engine"] for e in gguf["engines"]] == ["llamacpp", "torch"] and gguf["quantization"] == "f32"
    onnx = json.loads(slm("show", "tiny-onnx-fp32", "--json").stdout)
    assert onnx["architecture"] == "phi3" and onnx["quantization"] == "onnx fp32" and onnx["parameters"]
    text = slm("show", "tiny-onnx-fp32").stdout
    assert "ortgenai (installed)" in text


def test_generate_gives_the_same_text_on_all_three_engines(tiny_store):
    outputs = {name: slm("generate", name, "What is 2 + 2?", "-n", "16", "--temperature", "0", "--ignore-eos").stdout
               for name in ENGINES}
    assert len(set(outputs.values())) == 1, outputs


def test_compare_torch_gguf_onnx_side_by_side(tiny_store):
    """Chat prompts: torch and ORT GenAI share the HF tokenizer and agree token for token. llama.cpp's
    SentencePiece tokenizer puts a '▁' before the text after each special token (llama.cpp's
    add_space_prefix rule), transformers 5's non-legacy Llama tokenizer does not: three more prompt
    tokens for `<|user|>\\n…<|end|>\\n<|assistant|>\\n`, so its answer may differ."""
    done = slm("compare", *ENGINES, "What is 2 + 2?", "--json", "--temperature", "0", "--ignore-eos", "-n", "12")
    results = {r["model"]: r for r in json.loads(done.stdout)["prompts"][0]["results"]}
    assert all(r["error"] is None and r["completion_tokens"] == 12 for r in results.values())
    assert results["tiny"]["text"] == results["tiny-onnx-fp32"]["text"]
    assert results["tiny"]["prompt_tokens"] == results["tiny-onnx-fp32"]["prompt_tokens"]
    assert results["tiny-gguf-fp32"]["prompt_tokens"] == results["tiny"]["prompt_tokens"] + 3


def test_the_llamacpp_tokenizer_divergence_after_special_tokens(tiny_store):
    torch_llm = LLM("tiny", max_sequences=1, context_length=128)
    gguf_llm = LLM("tiny-gguf-fp32", max_sequences=1, context_length=128)
    prompt = torch_llm.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert prompt == gguf_llm.apply_chat_template([{"role": "user", "content": "Hi"}])
    ours, theirs = torch_llm.encode_prompt(prompt), gguf_llm.encode_prompt(prompt)
    space = gguf_llm.encode_prompt(" ")[-1]
    specials = {i for i, t in enumerate(ours) if torch_llm.tokenizer.token_bytes(t) == b""}
    expected = [t for i, tok in enumerate(ours) for t in ([tok, space] if i in specials and i + 1 < len(ours) else [tok])]
    assert theirs == expected
    assert gguf_llm.encode_prompt("What is 2 + 2?") == torch_llm.encode_prompt("What is 2 + 2?")  # plain text agrees


def test_server_serves_the_onnx_conversion_to_the_openai_client(tiny_store):
    from openai import OpenAI
    from server_process import ServerProcess

    reference = LLM("tiny", max_sequences=1, context_length=256)
    question = [{"role": "user", "content": "Hello! How can I"}]
    want = reference.chat(question, SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)).text
    proc = ServerProcess("--model", "tiny-onnx-fp32", "--parallel", "2", "--context-length", "256")
    try:
        client = OpenAI(base_url=f"{proc.base}/v1", api_key="none")
        reply = client.chat.completions.create(model="tiny-onnx-fp32", messages=question, max_tokens=10,
                                               temperature=0, extra_body={"ignore_eos": True})
        assert reply.choices[0].message.content == want
        stream = client.chat.completions.create(model="tiny-onnx-fp32", messages=question, max_tokens=10,
                                                temperature=0, stream=True, extra_body={"ignore_eos": True})
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want
    finally:
        proc.stop()


def test_cli_errors_are_one_line(tiny_store, tmp_path):
    existing = slm("convert", "tiny", "--to", "gguf", "--precision", "fp32", check=False)
    empty = slm("convert", str(tmp_path), "--to", "onnx", "--precision", "int4", check=False)
    fp16 = slm("convert", "tiny", "--to", "onnx", "--precision", "fp16", check=False)
    for done, words in ((existing, "already in the store"), (empty, "no config.json"), (fp16, "GPUs only")):
        assert done.returncode != 0 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_engine_whose_extra_is_missing_names_it(tiny_store, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)  # as if slmkit[onnx] were not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'slmkit\[onnx\]'"):
        LLM("tiny-onnx-fp32")
    from slmkit.backends.loading import engine_support
    from slmkit.store.store import ModelStore

    support = engine_support(ModelStore().resolve("tiny-onnx-fp32").path)
    assert [s.describe() for s in support] == ["ortgenai (needs pip install 'slmkit[onnx]')"]
