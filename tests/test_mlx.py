"""The MLX engine: tiny random Phi-3 (plain and longrope) and Llama checkpoints with a SentencePiece
tokenizer trained here, converted by mlx-lm's own converter (`slm convert --to mlx`) and run by
mlx-lm's model classes and KV caches behind our Runner, against our torch engine on the HF folder.

fp32 and fp16 conversions must give the torch engine's greedy ids exactly, for longrope prompts
below, across and above ``original_max_position_embeddings``. That holds because the runner gives
mlx-lm's attention layers a short-factor ``SuScaledRoPE`` below the switch point: mlx-lm alone
rotates with the long factors at every length, and `test_plain_mlx_lm_rope_diverges_below_the_
original_length` measures where that leaves transformers' answer. Quantized conversions must
load, generate, stop on the end token and keep the first step's top-1 token on most prompts.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

from hf_fixtures import (  # noqa: E402
    CORPUS, GREEDY, LONGROPE_ORIGINAL, PROMPTS, broken_copy, check_quantized, check_runner_seam, convert_once,
    open_llm, write_checkpoint_set, write_sp_checkpoint)

from slmkit import LLM, SamplingParams  # noqa: E402
from slmkit.backends.base import Chunk  # noqa: E402
from slmkit.errors import BackendUnavailableError, InvalidParameterError, ModelLoadError  # noqa: E402
from slmkit.store.convert import convert_into_store  # noqa: E402
from slmkit.store.store import ModelStore  # noqa: E402

# Longrope (original length 64): prompts that stay below it, one that crosses it while generating
# (44 + 24 tokens: the runner re-prefills with the long factors) and ones that start past it.
LONGROPE_PROMPTS = PROMPTS[:3] + [" ".join(CORPUS[0:2])] + [" ".join(CORPUS[i : i + 3]) for i in (0, 2)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ModelStore(tmp_path_factory.mktemp("mlx-store"), progress=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_checkpoint_set(tmp_path_factory.mktemp("mlx-checkpoints"))


def converted(store, checkpoints, name, precision):
    return convert_once(store, checkpoints, name, "mlx", precision)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", ["phi3", "phi3-longrope", "llama"])
def test_conversions_give_the_torch_engines_greedy_ids(store, checkpoints, name, precision):
    model = converted(store, checkpoints, name, precision)
    assert model.manifest.format == "mlx" and model.manifest.notes["engine"] == "mlx"
    prompts = LONGROPE_PROMPTS if name == "phi3-longrope" else PROMPTS
    with open_llm(checkpoints[name], backend="torch") as reference, open_llm(model.path) as mlx:
        assert mlx.backend == "mlx" and mlx.info.file_type == f"mlx {precision}"
        lengths = []
        for prompt in prompts:
            ids = reference.encode_prompt(prompt)
            assert mlx.encode_prompt(prompt) == ids  # the source's tokenizer.json, copied
            lengths.append(len(ids))
            assert mlx.generate(ids, GREEDY).token_ids == reference.generate(ids, GREEDY).token_ids, prompt
    if name == "phi3-longrope":  # the three regimes were all exercised
        assert min(lengths) + GREEDY.max_tokens <= LONGROPE_ORIGINAL < max(lengths)
        assert any(n < LONGROPE_ORIGINAL < n + GREEDY.max_tokens for n in lengths)


def test_phimoe_runs_on_mlx_like_our_torch_phimoe(store, tmp_path_factory):
    """mlx-lm's phimoe reads ``rope_scaling`` (with short/long mscales) and crashes without it
    (mlx-lm #1884); transformers 5 writes only ``rope_parameters``: the converter's config has both.
    Its sparsemixer routing and LayerNorm then give our torch PhiMoE's greedy ids."""
    folder = write_sp_checkpoint(tmp_path_factory.mktemp("mlx-moe") / "phimoe", moe=True, longrope=True, seed=4)
    convert_into_store(store, str(folder), "mlx", "fp32", name="phimoe-mlx")
    with open_llm(folder, backend="torch") as reference, open_llm(store.resolve("phimoe-mlx").path) as mlx:
        assert mlx.info.architecture == "phimoe"
        for prompt in LONGROPE_PROMPTS[::2]:
            ids = reference.encode_prompt(prompt)
            assert mlx.generate(ids, GREEDY).token_ids == reference.generate(ids, GREEDY).token_ids, prompt


def plain_mlx_lm_greedy(folder, ids: list[int], steps: int) -> list[int]:
    """Greedy ids from mlx-lm alone: its load_model, its prompt cache, its rope."""
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.utils import load_model

    model, _ = load_model(folder)
    cache = make_prompt_cache(model)
    tokens, step = [], mx.array([ids])
    for _ in range(steps):
        token = int(mx.argmax(model(step, cache=cache)[0, -1]).item())
        tokens.append(token)
        step = mx.array([[token]])
    return tokens


def test_plain_mlx_lm_rope_diverges_below_the_original_length(store, checkpoints):
    """mlx-lm's phi3 builds ``SuScaledRoPE`` from ``long_factor`` alone: below the original length
    (64 here) transformers rotates with ``short_factor``, so mlx-lm's own greedy answer leaves ours
    within a few tokens; past it both use the long factors and agree. (Measured here: first
    divergence at tokens 0-4 for the short prompts; none past 64.) The runner's short-factor rope
    removes the difference (test above)."""
    model = converted(store, checkpoints, "phi3-longrope", "fp32")
    divergences = {}
    with open_llm(checkpoints["phi3-longrope"], backend="torch") as reference:
        for prompt in LONGROPE_PROMPTS:
            ids = reference.encode_prompt(prompt)
            want = reference.generate(ids, GREEDY).token_ids
            theirs = plain_mlx_lm_greedy(model.path, ids, GREEDY.max_tokens)
            divergences[len(ids)] = next((i for i, (a, b) in enumerate(zip(want, theirs)) if a != b), None)
    print(f"\nplain mlx-lm vs torch, longrope: first differing token by prompt length {divergences}")
    below = [d for n, d in divergences.items() if n + GREEDY.max_tokens <= LONGROPE_ORIGINAL]
    above = [d for n, d in divergences.items() if n > LONGROPE_ORIGINAL]
    assert below and all(d is not None for d in below)
    assert above and all(d is None for d in above)


def test_runner_rewinds_copies_prefixes_and_scores_every_position(store, checkpoints):
    """The runner seam beyond plain decoding: truncate (trim_prompt_cache), copy_prefix, all_logits."""
    model = converted(store, checkpoints, "phi3", "fp32")
    with open_llm(model.path) as mlx, open_llm(checkpoints["phi3"], backend="torch") as reference:
        runner = mlx.runner
        ids = mlx.encode_prompt("What is 2 + 2? The answer is 4.")
        expected = check_runner_seam(runner, reference.runner, ids)
        # Two decodes together (one [2, 1] forward over a BatchKVCache), then one rewound inside it.
        both = runner.forward([Chunk(0, ids[7:8], 7), Chunk(1, ids[8:9], 8)])
        np.testing.assert_allclose(both, expected[[7, 8]], atol=2e-4, rtol=1e-4)
        runner.truncate(1, 8)
        np.testing.assert_allclose(runner.forward([Chunk(1, ids[8:9], 8), Chunk(0, ids[8:9], 8)]),
                                   expected[[8, 8]], atol=2e-4, rtol=1e-4)
        runner.free(1)
        assert runner.sequence_length(1) == 0 and runner.used_cells() == 9


@pytest.mark.parametrize("name", ["llama", "phi3-longrope"])
def test_engine_batches_mlx_sequences_like_alone(store, checkpoints, name):
    """Continuous batching over mlx-lm's BatchKVCache: four requests submitted at once equal each
    alone, with the same lengths and with different ones (so they leave the batch one by one); on
    longrope the 44-token prompt crosses the switch point while batched."""
    from engine_helpers import collect_tokens

    from slmkit.engine.engine import Engine, Request

    model = converted(store, checkpoints, name, "fp32")
    with open_llm(model.path) as mlx:
        prompts = [mlx.encode_prompt(p) for p in PROMPTS[:3] + [" ".join(CORPUS[0:2])]]
        same = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
        assert collect_tokens(mlx.runner, mlx.tokenizer, prompts, same) == [mlx.generate(p, same).token_ids for p in prompts]
        params = [SamplingParams(max_tokens=6 + 6 * i, temperature=0, ignore_eos=True) for i in range(len(prompts))]
        alone = [mlx.generate(p, q).token_ids for p, q in zip(prompts, params)]
        for seq_id in range(mlx.runner.max_sequences):  # the LLM's engine keeps finished prompts for reuse
            mlx.runner.free(seq_id)
        engine = Engine(mlx.runner, mlx.tokenizer)
        outputs: list[list[int]] = [[] for _ in prompts]
        for i, (prompt, q) in enumerate(zip(prompts, params)):
            engine.add_request(Request(list(prompt), q, f"r{i}"), lambda out, sink=outputs[i]: sink.extend(out.token_ids))
        engine.run_until_done()
        assert outputs == alone


def test_a_hugging_face_folder_runs_on_mlx_directly(checkpoints):
    """``--backend mlx`` on the HF folder itself: mlx-lm reads transformers' files; the rope keys of
    transformers 5's config are given to it in both styles."""
    folder = checkpoints["phi3-longrope"]
    with open_llm(folder, backend="torch") as reference, open_llm(folder, backend="mlx") as mlx:
        assert mlx.backend == "mlx"
        for prompt in LONGROPE_PROMPTS[::2]:
            ids = reference.encode_prompt(prompt)
            assert mlx.generate(ids, GREEDY).token_ids == reference.generate(ids, GREEDY).token_ids


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantized_conversions_load_generate_stop_and_keep_the_top_token(store, checkpoints, precision):
    model = converted(store, checkpoints, "phi3-wide", precision)
    with open_llm(checkpoints["phi3-wide"], backend="torch") as reference, open_llm(model.path) as quantized:
        assert quantized.info.file_type == f"mlx {precision}"
        check_quantized(reference, quantized, f"mlx {precision}")


def test_bad_input_is_one_clear_error(store, checkpoints):
    with pytest.raises(InvalidParameterError, match="no precision 'int3'"):
        convert_into_store(store, str(checkpoints["phi3"]), "mlx", "int3")
    model = converted(store, checkpoints, "phi3", "fp32")
    with pytest.raises(InvalidParameterError, match="is an MLX folder; the torch engine cannot run it"):
        LLM(str(model.path), backend="torch")


def test_a_missing_extra_names_it(store, checkpoints, monkeypatch):
    model = converted(store, checkpoints, "phi3", "fp32")
    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # as if slmkit[mlx] were not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'slmkit\[mlx\]'"):
        LLM(str(model.path))
    from slmkit.backends.loading import engine_support

    assert [s.describe() for s in engine_support(model.path)] == ["mlx (needs pip install 'slmkit[mlx]')"]


def test_a_failing_converter_or_a_broken_folder_is_one_line(store, checkpoints, tmp_path):
    broken = broken_copy(checkpoints["phi3"], tmp_path / "broken")
    before = sorted(p.name for p in store.models_dir.iterdir())
    with pytest.raises(ModelLoadError) as failure:
        convert_into_store(store, str(broken), "mlx", "fp32")
    assert "mlx-lm's converter failed" in str(failure.value) and "\n" not in str(failure.value)
    assert sorted(p.name for p in store.models_dir.iterdir()) == before
    with pytest.raises(ModelLoadError, match="mlx-lm cannot load"):
        LLM(str(broken), backend="mlx")
