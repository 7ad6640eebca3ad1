"""An OpenVINO conversion through the CLI (`slm convert`, `slm show`, `slm generate`), `slm compare`
(torch vs OpenVINO side by side), the server (real openai client) and the missing-extra error."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("openvino")

from hf_fixtures import write_sp_checkpoint  # noqa: E402
from server_process import slm  # noqa: E402

from slmkit import LLM, SamplingParams  # noqa: E402
from slmkit.errors import BackendUnavailableError  # noqa: E402

SOURCE, CONVERTED = "tiny-ov-src", "tiny-ov-src-openvino-fp32"


@pytest.fixture(scope="module")
def tiny_store(slmkit_home, tmp_path_factory):
    """A tiny Phi-3 imported as `tiny-ov-src`, then converted by the CLI to OpenVINO fp32."""
    folder = write_sp_checkpoint(tmp_path_factory.mktemp("cli-ov") / "tiny-phi3", seed=5)
    for name in (SOURCE, CONVERTED):
        slm("rm", name, check=False)
    slm("import", str(folder), "--name", SOURCE)
    done = slm("convert", SOURCE, "--to", "openvino", "--precision", "fp32")
    assert f"stored {CONVERTED} (openvino fp32, run by openvino)" in done.stdout, done.stdout
    return folder


def test_show_lists_the_openvino_engine(tiny_store):
    facts = json.loads(slm("show", CONVERTED, "--json").stdout)
    assert facts["engines"] == [{"engine": "openvino", "installed": True, "extra": "openvino"}]
    assert facts["architecture"] == "phi3" and facts["quantization"] == "openvino fp32" and facts["parameters"]
    assert "openvino (installed)" in slm("show", CONVERTED).stdout


def test_generate_and_compare_give_the_torch_engines_text(tiny_store):
    args = ("What is 2 + 2?", "-n", "16", "--temperature", "0", "--ignore-eos")
    torch_text = slm("generate", SOURCE, *args).stdout
    assert slm("generate", CONVERTED, *args).stdout == torch_text
    done = slm("compare", SOURCE, CONVERTED, "What is 2 + 2?", "--json", "--temperature", "0", "--ignore-eos", "-n", "12")
    results = {r["model"]: r for r in json.loads(done.stdout)["prompts"][0]["results"]}
    assert all(r["error"] is None and r["completion_tokens"] == 12 for r in results.values()), results
    assert results[SOURCE]["text"] == results[CONVERTED]["text"]
    assert results[SOURCE]["prompt_tokens"] == results[CONVERTED]["prompt_tokens"]


def test_server_serves_the_openvino_conversion_to_the_openai_client(tiny_store):
    from openai import OpenAI
    from server_process import ServerProcess

    question = [{"role": "user", "content": "Hello! How can I"}]
    with LLM(SOURCE, max_sequences=1, context_length=256) as reference:
        want = reference.chat(question, SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)).text
    proc = ServerProcess("--model", CONVERTED, "--parallel", "2", "--context-length", "256")
    try:
        client = OpenAI(base_url=f"{proc.base}/v1", api_key="none")
        reply = client.chat.completions.create(model=CONVERTED, messages=question, max_tokens=10,
                                               temperature=0, extra_body={"ignore_eos": True})
        assert reply.choices[0].message.content == want
        stream = client.chat.completions.create(model=CONVERTED, messages=question, max_tokens=10,
                                                temperature=0, stream=True, extra_body={"ignore_eos": True})
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want
    finally:
        proc.stop()


def test_errors_are_one_line(tiny_store):
    bad = slm("convert", SOURCE, "--to", "openvino", "--precision", "q4_k_m", check=False)
    wrong = slm("generate", CONVERTED, "Hi", "--backend", "torch", check=False)
    for done, words in ((bad, "OpenVINO has no precision 'q4_k_m'"), (wrong, "is an OpenVINO folder")):
        assert done.returncode != 0 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_engine_whose_extra_is_missing_names_it(tiny_store, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if slmkit[openvino] were not installed
    with pytest.raises(BackendUnavailableError, match=r"^the openvino engine needs .*pip install 'slmkit\[openvino\]'$"):
        LLM(CONVERTED)
    from slmkit.backends.loading import engine_support
    from slmkit.store.store import ModelStore

    support = engine_support(ModelStore().resolve(CONVERTED).path)
    assert [s.describe() for s in support] == ["openvino (needs pip install 'slmkit[openvino]')"]
