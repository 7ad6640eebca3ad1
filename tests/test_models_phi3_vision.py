"""Phi-3-vision against golden numbers from the released reference code.

Where the numbers in tests/data/phi3v_golden.json come from: the released remote code, copied from
the public copies named in shared/REFERENCE.md §3 (``Phi3VImageProcessor.preprocess`` and its
``HD_transform``/``padding_336``, ``Phi3VProcessor._convert_images_texts_to_inputs``,
``Phi3ImageEmbedding`` from ``image_embedding_phi3_v.py``), run once outside this repository in a
scratch venv (torch 2.13.0, torchvision 0.28.0 for its PIL transforms, transformers 5.24.0) on the
checkpoint `write_tiny_vision_checkpoint(tower=REFERENCE_TOWER)` writes and the two images below,
with ``num_crops=4``. The only change to the reference was passing this tiny tower's CLIP config
(the reference hard-codes ViT-L/14-336; it also asserts a 1024-wide tower, which this one keeps).
The language model step ran in transformers' `Phi3ForCausalLM` on the reference embedder's
``inputs_embeds`` (the text model of ``phi3_v`` is Phi-3; our Phi-3 matches transformers in
test_models_phi3.py). Recorded: the weights' sum (so a changed fixture is caught first), per-image
HD size, view count, pixel sums and samples, token count, prompt ids, the sum of the image rows and
the logits of the first generated position.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from slmkit.backends.base import Chunk  # noqa: E402
from slmkit.backends.torch_native import TorchModel  # noqa: E402
from slmkit.vision.processor import preprocess  # noqa: E402
from tests.vision_fixtures import REFERENCE_TOWER, gradient_image, write_tiny_vision_checkpoint  # noqa: E402

GOLDEN = json.loads((Path(__file__).parent / "data" / "phi3v_golden.json").read_text())
IMAGES = {"a": gradient_image(500, 375, seed=1), "b": gradient_image(200, 520, seed=2)}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = write_tiny_vision_checkpoint(tmp_path_factory.mktemp("phi3v-golden"), tower=REFERENCE_TOWER,
                                          num_crops=GOLDEN["num_crops"])
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    assert sum(float(v.double().sum()) for v in weights.values()) == pytest.approx(GOLDEN["weights_sum"], rel=1e-9)
    return TorchModel(folder, dtype="float32")


@pytest.mark.parametrize("case", GOLDEN["cases"])
def test_pixels_match_the_released_processor(case):
    for key, expected in zip(GOLDEN["cases"][case]["images"], GOLDEN["cases"][case]["per_image"]):
        processed = preprocess(IMAGES[key], key, GOLDEN["num_crops"])
        views = processed.pixel_values.double()
        assert list(processed.hd_size) == expected["image_size"]
        assert views.shape[0] == expected["views"]
        assert float(views.sum()) == pytest.approx(expected["pixel_sum"], rel=1e-6)
        assert float(views.abs().sum()) == pytest.approx(expected["pixel_abs_sum"], rel=1e-6)
        for value, (v, c, y, x) in zip(expected["pixel_samples"], [(0, 0, 0, 0), (0, 1, 100, 200),
                                                                    (views.shape[0] - 1, 2, 335, 335), (1, 0, 17, 300)]):
            assert float(views[v, c, y, x]) == pytest.approx(value, abs=1e-5)


@pytest.mark.parametrize("case", GOLDEN["cases"])
def test_prompt_features_and_first_logits_match_the_released_model(model, case):
    golden = GOLDEN["cases"][case]
    prompt = model.vision.build(golden["text"], [IMAGES[k] for k in golden["images"]])
    assert len(prompt.token_ids) == golden["num_tokens"]
    image_positions = {p for span in prompt.embeddings for p in range(span.start, span.end)}
    for position, (ours, theirs) in enumerate(zip(prompt.token_ids, golden["input_ids"])):
        if theirs < 0:  # the reference marks image k's positions with -k
            assert position in image_positions
            span = next(s for s in prompt.embeddings if s.start <= position < s.end)
            assert prompt.embeddings.index(span) == -theirs - 1
        else:
            assert position not in image_positions and ours == theirs
    assert prompt.image_tokens == sum(i["num_img_tokens"] for i in golden["per_image"])
    features = sum(float(span.rows.double().sum()) for span in prompt.embeddings)
    assert features == pytest.approx(golden["image_features_sum"], rel=1e-5, abs=1e-3)
    runner = model.create_runner(context_length=2048, max_sequences=1, max_batch_tokens=512)
    ids = prompt.token_ids
    for start in range(0, len(ids), 512):  # in chunks: image rows cut across chunk borders
        logits = runner.forward([Chunk(0, ids[start : start + 512], start, want_logits=start + 512 >= len(ids),
                                       embeddings=prompt.embeddings)])
    expected = torch.tensor(golden["logits_first_step"])
    assert (torch.from_numpy(logits[0]) - expected).abs().max().item() < 1e-4
