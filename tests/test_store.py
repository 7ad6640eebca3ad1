"""The model store: names, import, variants, quantization, removal, broken files."""

from __future__ import annotations

import pytest

from slmkit.errors import InvalidParameterError, ModelLoadError, ModelNotFoundError, OfflineError
from slmkit.store.store import ModelStore, parse_reference


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "home", progress=False)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", "Name", "x:../y", "", ":tag", "a:"])
def test_names_cannot_escape_or_be_odd(bad, store):
    with pytest.raises(InvalidParameterError):
        parse_reference(bad)
        store.folder(bad)


def test_import_show_quantize_remove(store, smollm2_path):
    manifest = store.import_file(smollm2_path, "mymodel", system="Be brief.")
    assert manifest.variants == {"original": "original.gguf"} and manifest.system == "Be brief."
    resolved = store.resolve("mymodel")
    assert resolved.path.read_bytes()[:4] == b"GGUF" and resolved.name == "mymodel:original"

    store.quantize("mymodel", "q8_0")
    from slmkit.store.gguf_info import read_gguf_summary

    assert read_gguf_summary(store.resolve("mymodel:q8_0").path).file_type == "q8_0"
    assert {v.reference for v in store.list()} == {"mymodel:original", "mymodel:q8_0"}

    assert store.remove("mymodel:q8_0").removed == ["mymodel:q8_0"]
    with pytest.raises(ModelNotFoundError, match="no variant 'q8_0'"):
        store.resolve("mymodel:q8_0")
    assert store.remove("mymodel").removed == ["mymodel:original"]
    with pytest.raises(ModelNotFoundError, match="unknown model 'mymodel'"):
        store.resolve("mymodel")


def test_broken_file_is_refused_before_anything_is_written(store, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="is GGUF version 0; llama.cpp reads versions 2 and 3"):
        store.import_file(broken, "broken")
    assert store.list() == []
    from slmkit.backends.llamacpp import LlamaCppModel

    with pytest.raises(ModelLoadError, match="GGUF version 0"):
        LlamaCppModel(broken)


def test_unknown_quantization_names_the_choices(store, smollm2_path):
    store.import_file(smollm2_path, "m")
    with pytest.raises(InvalidParameterError, match="q8_0"):
        store.quantize("m", "q3_weird")


def test_catalogue_model_offline_explains_import(store):
    with pytest.raises(OfflineError, match="slm import .* --name phi3-mini-4k"):
        store.pull("phi3-mini-4k")
    with pytest.raises(ModelNotFoundError, match="slm import"):
        store.resolve("phi3.5-moe")
    # no GGUF of Phi-3-small exists: its folder runs in place with the code it bundles
    with pytest.raises(OfflineError, match=r"slm run ./Phi-3-small-8k-instruct --trust-remote-code") as refused:
        store.pull("phi3-small")
    assert "slmkit[transformers]" in str(refused.value) and "\n" not in str(refused.value)


def test_pull_smollm2_checks_q8_0_before_making_it_default(store):
    manifest = store.pull("smollm2")
    assert set(manifest.variants) == {"original", "q8_0"}
    report = manifest.notes["q8_0_check"]
    same = report.startswith("3/3")
    assert manifest.default_variant == ("q8_0" if same else "original")
    assert store.resolve("smollm2:original").path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_gemma3_is_assembled_and_generates(store):
    from slmkit import LLM, SamplingParams

    store.pull("gemma3-270m")
    resolved = store.resolve("gemma3-270m")
    assert resolved.path.stat().st_size > 200_000_000
    with LLM("gemma3-270m", store=store, context_length=512) as llm:
        assert llm.info.architecture == "gemma3"
        out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8))
        assert out.text.strip() and out.usage.completion_tokens >= 1
