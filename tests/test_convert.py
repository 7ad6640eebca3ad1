"""`slm convert` through the store: tiny random Phi-3 (plain and longrope) and Llama checkpoints with a
SentencePiece tokenizer trained here, converted to GGUF by llama.cpp's own script and to ONNX by
ORT GenAI's builder, then run by llama.cpp and ORT GenAI against our torch engine on the HF folder.

fp32 conversions must give the torch engine's greedy ids exactly. Quantized ones must load,
generate, stop on the end token and keep the first step's top-1 token on most prompts; the
measured agreement rates are printed (`pytest -s`) and reported in BENCHMARKS.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("onnxruntime_genai")

from hf_fixtures import (  # noqa: E402
    GREEDY, LONG_PROMPTS, LONGROPE_ORIGINAL, PROMPTS, broken_copy, check_batched_like_alone, check_quantized,
    check_runner_seam, convert_once, open_llm, write_checkpoint_set, write_sp_checkpoint)

from slmkit import LLM, SamplingParams  # noqa: E402
from slmkit.backends.base import Chunk  # noqa: E402
from slmkit.errors import InvalidParameterError, ModelLoadError, ModelNotFoundError, SlmkitError  # noqa: E402
from slmkit.store.convert import convert_into_store  # noqa: E402
from slmkit.store.store import ModelStore  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ModelStore(tmp_path_factory.mktemp("convert-store"), progress=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_checkpoint_set(tmp_path_factory.mktemp("checkpoints"))


@pytest.mark.parametrize("name", ["phi3", "phi3-longrope", "llama"])
def test_fp32_conversions_give_the_torch_engines_greedy_ids(store, checkpoints, name):
    prompts = LONG_PROMPTS if name == "phi3-longrope" else PROMPTS
    reference = open_llm(checkpoints[name], backend="torch")
    gguf = convert_once(store, checkpoints, name, "gguf", "fp32")
    onnx = convert_once(store, checkpoints, name, "onnx", "fp32")
    assert gguf.manifest.format == "gguf" and onnx.manifest.format == "onnx"
    with open_llm(gguf.path) as llamacpp, open_llm(onnx.path) as ortgenai:
        assert (llamacpp.backend, ortgenai.backend) == ("llamacpp", "ortgenai")
        for prompt in prompts:
            ids = reference.encode_prompt(prompt)
            if name == "phi3-longrope":
                assert len(ids) > LONGROPE_ORIGINAL, len(ids)
            # Same tokenizer in all three: llama.cpp's SentencePiece vocab from tokenizer.model,
            # tokenizer.json for torch and ORT GenAI.
            assert llamacpp.encode_prompt(prompt) == ids == ortgenai.encode_prompt(prompt)
            want = reference.generate(ids, GREEDY).token_ids
            assert llamacpp.generate(ids, GREEDY).token_ids == want, prompt
            assert ortgenai.generate(ids, GREEDY).token_ids == want, prompt
    reference.close()


@pytest.mark.parametrize("to", ["gguf", "onnx"])
@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantized_conversions_load_generate_stop_and_keep_the_top_token(store, checkpoints, to, precision):
    model = convert_once(store, checkpoints, "phi3-wide", to, precision)
    expected_tag = {"gguf": {"int8": "q8_0", "int4": "q4_k_m"}, "onnx": {"int8": "int8", "int4": "int4"}}[to][precision]
    assert model.manifest.default_variant == expected_tag
    with open_llm(checkpoints["phi3-wide"], backend="torch") as reference, open_llm(model.path) as quantized:
        if to == "gguf":
            assert quantized.info.file_type == expected_tag
        check_quantized(reference, quantized, f"{to} {precision}")


def test_ortgenai_runner_rewinds_copies_prefixes_and_scores_every_position(store, checkpoints):
    """The runner seam beyond plain decoding: truncate (rewind_to), copy_prefix (re-run), all_logits."""
    onnx = convert_once(store, checkpoints, "phi3", "onnx", "fp32")
    with open_llm(onnx.path) as model, open_llm(checkpoints["phi3"], backend="torch") as reference:
        runner = model.runner
        check_runner_seam(runner, reference.runner, model.encode_prompt("What is 2 + 2? The answer is 4."))
        runner.free(1)
        assert runner.sequence_length(1) == 0 and runner.used_cells() == 7


def test_engines_batch_ortgenai_sequences_like_alone(store, checkpoints):
    """Continuous batching over one Generator per sequence: four requests together equal each alone."""
    with open_llm(convert_once(store, checkpoints, "llama", "onnx", "fp32").path) as model:
        check_batched_like_alone(model, PROMPTS[:4])


def test_phimoe_gguf_against_our_torch_phimoe(store, tmp_path_factory):
    """llama.cpp's phimoe graph is known to differ from the reference (RMS norm where PhiMoE uses
    LayerNorm, softmax top-2 where it uses sparsemixer, its own attention factor instead of the
    config's mscales): measure the last-position logit difference and top-1 agreement."""
    folder = write_sp_checkpoint(tmp_path_factory.mktemp("moe") / "phimoe", moe=True, longrope=True, seed=4)
    convert_into_store(store, str(folder), "gguf", "fp32", name="phimoe-gguf")
    gguf = store.resolve("phimoe-gguf")
    diffs, agree = [], 0
    with open_llm(folder, backend="torch") as reference, open_llm(gguf.path) as llamacpp:
        assert llamacpp.info.architecture == "phimoe"
        for prompt in LONG_PROMPTS:
            ids = reference.encode_prompt(prompt)
            ours = reference.runner.forward([Chunk(0, ids, 0)])[0].copy()
            theirs = llamacpp.runner.forward([Chunk(0, ids, 0)])[0].copy()
            reference.runner.free(0)
            llamacpp.runner.free(0)
            diffs.append(float(np.abs(ours - theirs).max() / np.abs(ours).max()))
            agree += int(ours.argmax() == theirs.argmax())
    print(f"\nphimoe gguf vs torch: max |logit diff| / max |logit| = {', '.join(f'{d:.3f}' for d in diffs)}; "
          f"top-1 agrees on {agree}/{len(LONG_PROMPTS)}")
    assert all(np.isfinite(diffs))


# -- bad input: one clear error, nothing left in the store ---------------------------------------
def store_entries(store):
    return sorted(p.name for p in store.models_dir.iterdir()) if store.models_dir.is_dir() else []


def test_a_folder_without_config_json(store, tmp_path):
    before = store_entries(store)
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        convert_into_store(store, str(tmp_path), "gguf", "fp32")
    assert store_entries(store) == before


@pytest.mark.parametrize("to,architecture,why", [
    ("gguf", "Phi3SmallForCausalLM", "cannot handle"),
    ("onnx", "FancyNewForCausalLM", "cannot handle"),
    ("onnx", "PhiMoEForCausalLM", "CUDA only"),
])
def test_an_architecture_the_converter_cannot_handle(store, tmp_path, to, architecture, why):
    before = store_entries(store)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": "x"}))
    with pytest.raises(InvalidParameterError, match=why):
        convert_into_store(store, str(tmp_path), to, "fp32")
    assert store_entries(store) == before


def test_precisions_a_format_lacks(store, checkpoints):
    with pytest.raises(InvalidParameterError, match="GPUs only"):
        convert_into_store(store, str(checkpoints["phi3"]), "onnx", "fp16")
    with pytest.raises(InvalidParameterError, match="no precision"):
        convert_into_store(store, str(checkpoints["phi3"]), "gguf", "int3")
    with pytest.raises(InvalidParameterError, match="cannot convert to 'coreml'"):
        convert_into_store(store, str(checkpoints["phi3"]), "coreml", "fp32")


def test_an_existing_name_is_refused_before_any_work(store, checkpoints):
    convert_once(store, checkpoints, "phi3", "gguf", "fp32")
    before = store_entries(store)
    with pytest.raises(InvalidParameterError, match="already in the store"):
        convert_into_store(store, str(checkpoints["phi3"]), "gguf", "fp32")
    assert store_entries(store) == before


@pytest.mark.parametrize("to", ["gguf", "onnx"])
def test_a_failing_converter_leaves_nothing_behind(store, checkpoints, tmp_path, to):
    broken = broken_copy(checkpoints["phi3"], tmp_path / "broken")
    before = store_entries(store)
    with pytest.raises(ModelLoadError) as failure:
        convert_into_store(store, str(broken), to, "fp32")
    message = str(failure.value)
    assert "failed" in message and "\n" not in message, message
    assert store_entries(store) == before


def test_a_gguf_source_is_refused(store, smollm2_path):
    with pytest.raises(SlmkitError, match="needs a Hugging Face folder"):
        convert_into_store(store, str(smollm2_path), "onnx", "int4")


def test_ortgenai_own_search_through_the_llm_api(store, checkpoints):
    """``search="ortgenai"``: ORT GenAI chooses the tokens; greedy and beam search agree with ours.
    (Without ignore_eos: ORT can only ignore its end tokens by forbidding them (min_length), where
    ours generates them and goes on, so greedy ids differ from the first end token on.)"""
    onnx = convert_once(store, checkpoints, "phi3", "onnx", "fp32")
    with open_llm(onnx.path, search="ortgenai") as native, \
            LLM(str(onnx.path), max_sequences=8, context_length=256) as ours:
        greedy = SamplingParams(max_tokens=24, temperature=0)
        for prompt in PROMPTS[:3]:
            ids = ours.encode_prompt(prompt)
            mine = ours.generate(ids, greedy)
            theirs = native.generate(ids, greedy)
            assert (theirs.token_ids, theirs.finish_reason) == (mine.token_ids, mine.finish_reason)
        beams = SamplingParams(max_tokens=8, temperature=0, num_beams=3, ignore_eos=True)
        assert native.generate(ids, beams).token_ids == ours.generate(ids, beams).token_ids
        sampled = SamplingParams(max_tokens=8, temperature=0.8, top_k=20, top_p=0.9, seed=3, ignore_eos=True)
        first = native.generate(ids, sampled)
        assert first.token_ids == native.generate(ids, sampled).token_ids and len(first.token_ids) == 8
        streamed = list(native.chat([{"role": "user", "content": "Hi"}], GREEDY, stream=True))
        assert streamed[-1].finish_reason == "length" and sum(len(d.token_ids) for d in streamed) == 24
        with pytest.raises(InvalidParameterError, match="min_p"):
            native.generate(ids, SamplingParams(max_tokens=4, min_p=0.1))
    with pytest.raises(InvalidParameterError, match="needs the ortgenai engine"):
        LLM(str(checkpoints["phi3"]), search="ortgenai")
