"""`slm convert --to openvino` (optimum-intel in its own venv) and the OpenVINO runner, on the tiny
random Phi-3 (plain and longrope) and Llama checkpoints of test_convert.py, against our torch engine
on the HF folder and against OpenVINO GenAI's own LLMPipeline on the same export.

fp32 exports must give the torch engine's greedy ids exactly (the runner compiles with f32
inference and KV precision: OpenVINO's CPU default here is bf16 / f16). int8 / int4 (NNCF weight
compression) must load, generate, stop on the end token and keep the first step's top-1 token on
most prompts; the agreement rates are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("openvino")

from hf_fixtures import (  # noqa: E402
    GREEDY, LONG_PROMPTS, LONGROPE_ORIGINAL, PROMPTS, check_batched_like_alone, check_quantized, check_runner_seam,
    convert_once, open_llm, write_checkpoint_set)

from slmkit import SamplingParams  # noqa: E402
from slmkit.backends.base import Chunk  # noqa: E402
from slmkit.errors import ModelLoadError  # noqa: E402
from slmkit.store.store import ModelStore  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ModelStore(tmp_path_factory.mktemp("openvino-store"), progress=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_checkpoint_set(tmp_path_factory.mktemp("checkpoints"))


def converted(store, checkpoints, name, precision):
    return convert_once(store, checkpoints, name, "openvino", precision)


@pytest.mark.parametrize("name", ["phi3", "phi3-longrope", "llama"])
def test_fp32_conversion_gives_the_torch_engines_greedy_ids(store, checkpoints, name):
    prompts = LONG_PROMPTS if name == "phi3-longrope" else PROMPTS
    model = converted(store, checkpoints, name, "fp32")
    assert model.manifest.format == "openvino" and model.manifest.notes["engine"] == "openvino"
    for exported in ("openvino_model.xml", "openvino_tokenizer.xml", "openvino_detokenizer.xml"):
        assert (model.path / exported).is_file(), exported
    with open_llm(checkpoints[name], backend="torch") as reference, open_llm(model.path) as ov:
        assert ov.backend == "openvino"
        for prompt in prompts:
            ids = reference.encode_prompt(prompt)
            if name == "phi3-longrope":
                assert len(ids) > LONGROPE_ORIGINAL, len(ids)
            assert ov.encode_prompt(prompt) == ids
            assert ov.generate(ids, GREEDY).token_ids == reference.generate(ids, GREEDY).token_ids, prompt


def test_fp32_from_a_bf16_checkpoint_has_fp32_weights(store, checkpoints, tmp_path):
    """A bf16 checkpoint (as Phi ships) exported at fp32 keeps no bf16 constant in the IR."""
    import torch
    import transformers

    bf16 = tmp_path / "phi3-bf16"
    shutil.copytree(checkpoints["phi3"], bf16)
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoints["phi3"], dtype=torch.bfloat16)
    model.save_pretrained(bf16)
    config = json.loads((bf16 / "config.json").read_text())
    config.pop("dtype", None), config.pop("torch_dtype", None)  # as the Phi-sized benchmark folder: no dtype key
    (bf16 / "config.json").write_text(json.dumps(config))
    from slmkit.store.convert import convert_into_store

    convert_into_store(store, str(bf16), "openvino", "fp32", name="phi3-bf16-openvino-fp32")
    xml = (store.resolve("phi3-bf16-openvino-fp32").path / "openvino_model.xml").read_text()
    assert 'element_type="bf16"' not in xml and 'element_type="f16"' not in xml
    assert 'element_type="f32"' in xml


def test_our_runner_gives_openvino_genais_own_greedy_ids(store, checkpoints):
    """The same IR through OpenVINO GenAI's LLMPipeline (its tokenizer IR, its sampler): our runner,
    tokenizer and sampler choose the same tokens."""
    ov_genai = pytest.importorskip("openvino_genai")
    model = converted(store, checkpoints, "phi3", "fp32")
    pipeline = ov_genai.LLMPipeline(str(model.path), "CPU", INFERENCE_PRECISION_HINT="f32", KV_CACHE_PRECISION="f32")
    config = ov_genai.GenerationConfig(max_new_tokens=GREEDY.max_tokens, do_sample=False, ignore_eos=True)
    with open_llm(model.path) as ours:
        for prompt in PROMPTS:
            ids = ours.encode_prompt(prompt)
            tensor = __import__("openvino").Tensor(np.asarray([ids], dtype=np.int64))
            theirs = pipeline.generate(tensor, config)
            assert list(np.asarray(theirs.tokens[0])) == ours.generate(ids, GREEDY).token_ids, prompt


def test_runner_rewinds_copies_prefixes_and_scores_every_position(store, checkpoints):
    """truncate cuts the KV states, copy_prefix copies them (no re-run), all_logits scores every
    position, decode tokens of several sequences run as one batch."""
    model = converted(store, checkpoints, "phi3", "fp32")
    with open_llm(model.path) as ov, open_llm(checkpoints["phi3"], backend="torch") as reference:
        runner = ov.runner
        ids = ov.encode_prompt("What is 2 + 2? The answer is 4.")
        expected = check_runner_seam(runner, reference.runner, ids)
        runner.free(1)
        assert runner.sequence_length(1) == 0 and runner.used_cells() == 7
        fresh = runner.forward([Chunk(1, ids[:4], 0)])  # a freed sequence starts from an empty state
        np.testing.assert_allclose(fresh[0], expected[3], atol=2e-4, rtol=1e-4)
        # Two decode tokens of different lengths (7 and 4) in one batched infer: left-padded states.
        together = runner.forward([Chunk(0, ids[7:8], 7), Chunk(1, ids[4:5], 4)])
        assert runner._batch is not None  # the batched path ran
        np.testing.assert_allclose(together, expected[[7, 4]], atol=2e-4, rtol=1e-4)
        after = runner.forward([Chunk(1, ids[5:6], 5)])  # the cut-back state carries on alone
        np.testing.assert_allclose(after[0], expected[5], atol=2e-4, rtol=1e-4)


def test_engines_batch_openvino_sequences_like_alone(store, checkpoints):
    """Continuous batching (decode steps batched in one infer): four requests together equal each alone."""
    with open_llm(converted(store, checkpoints, "llama", "fp32").path) as ov:
        check_batched_like_alone(ov, PROMPTS[:4])


def test_structured_output_and_stop_strings_are_ours(store, checkpoints):
    """A JSON schema (llguidance masks on our side) and a stop string on the OpenVINO engine."""
    model = converted(store, checkpoints, "phi3", "fp32")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    with open_llm(model.path) as ov:
        out = ov.generate("What is 2 + 2?", SamplingParams(max_tokens=40, temperature=0, json_schema=schema))
        assert set(json.loads(out.text)) == {"n"}, out.text
        free = ov.generate("The capital of France is", SamplingParams(max_tokens=16, temperature=0, ignore_eos=True))
        stop = free.text.strip()[:2]
        cut = ov.generate("The capital of France is", SamplingParams(max_tokens=16, temperature=0, ignore_eos=True,
                                                                      stop=[stop]))
        assert cut.finish_reason == "stop" and stop not in cut.text


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantized_conversions_load_generate_stop_and_keep_the_top_token(store, checkpoints, precision):
    model = converted(store, checkpoints, "phi3-wide", precision)
    assert model.manifest.default_variant == precision
    assert json.loads((model.path / "slmkit_source.json").read_text())["precision"] == precision
    with open_llm(checkpoints["phi3-wide"], backend="torch") as reference, open_llm(model.path) as quantized:
        assert quantized.info.file_type == precision
        check_quantized(reference, quantized, f"openvino {precision}")
    fp32 = converted(store, checkpoints, "phi3-wide", "fp32").path
    assert (model.path / "openvino_model.bin").stat().st_size < (fp32 / "openvino_model.bin").stat().st_size / 2


def test_an_export_without_its_tokenizer_ir_is_refused(store, checkpoints, tmp_path):
    """openvino-tokenizers fails silently inside the exporter: the missing file is named."""
    from slmkit.convert.openvino import check_export

    folder = tmp_path / "export"
    shutil.copytree(converted(store, checkpoints, "phi3", "fp32").path, folder)
    check_export(folder)
    (folder / "openvino_detokenizer.xml").unlink()
    with pytest.raises(ModelLoadError, match="no openvino_detokenizer.xml: openvino-tokenizers could not convert"):
        check_export(folder)


def test_a_folder_that_is_not_a_stateful_decoder(tmp_path):
    import openvino as ov

    from slmkit.backends.openvino import OpenVINOModel

    x = ov.opset13.parameter([1, 4], ov.Type.f32, name="input_ids")
    ov.save_model(ov.Model([ov.opset13.relu(x)], [x], "not-a-decoder"), str(tmp_path / "openvino_model.xml"))
    with pytest.raises(ModelLoadError, match="not a stateful decoder export"):
        OpenVINOModel(tmp_path)


def test_the_exporter_runs_in_its_own_environment():
    """optimum-intel's venv: its transformers (<5.6, not ours), exactly our torch build (CPU), and no
    torchvision (PyPI's is a CUDA build that breaks transformers' import next to a CPU torch)."""
    import importlib.metadata
    import subprocess

    from slmkit.convert.openvino import EXPORTER

    python = EXPORTER.ensure(progress=False) / "bin" / "python"
    probe = ("import importlib.metadata as m, importlib.util as u, json; print(json.dumps("
             "[m.version('transformers'), m.version('torch'), m.version('optimum-intel'), u.find_spec('torchvision') is None]))")
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    transformers, torch_version, optimum_intel, no_torchvision = json.loads(done.stdout)
    assert transformers == "5.5.4" != importlib.metadata.version("transformers")
    assert torch_version == importlib.metadata.version("torch") and optimum_intel == "2.2.0" and no_torchvision
