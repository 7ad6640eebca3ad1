"""Weight-only int8 and bfloat16 on the torch engine: the int8 layer against its dequantized
matmul, the loader's on-the-fly quantization against quantizing afterwards, the same top token as
fp32 on tiny Phi-3 and Phi-3-vision models, and the weight memory each takes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from slmkit.backends.base import Chunk  # noqa: E402
from slmkit.backends.torch_native import TorchModel  # noqa: E402
from slmkit.errors import InvalidParameterError  # noqa: E402
from slmkit.models.quantize import Int8Linear, quantize_model  # noqa: E402
from slmkit.models.safetensors import load_hf_model  # noqa: E402
from tests.hf_fixtures import write_tiny_checkpoint  # noqa: E402
from tests.vision_fixtures import gradient_image, write_tiny_vision_checkpoint  # noqa: E402

PRECISIONS = {"fp32": ("float32", "none"), "bf16": ("bfloat16", "none"), "int8": ("auto", "int8")}
PROMPTS = [[5, 9, 2, 7, 3, 11], [40, 41, 42], list(range(3, 60)), [1, 7], [100, 200, 150, 7, 8], [12, 12, 30]]
DECIDED = 0.01  # a top-2 logit gap under this is a tie that precision may break either way


@pytest.mark.parametrize("shape", [(64, 32), (96, 4096), (4096, 128), (8, 3072)])
def test_int8_layer_is_its_dequantized_matmul(shape):
    out_features, in_features = shape
    torch.manual_seed(0)
    linear = torch.nn.Linear(in_features, out_features)
    layer = Int8Linear.from_linear(linear, torch.float32)
    for rows in (5, 40):  # the int8 kernel, and the dequantized GEMM used for long prefills
        x = torch.randn(3, rows, in_features)
        expected = x @ layer.dequantized().T + linear.bias
        assert (layer(x) - expected).abs().max().item() < 1e-4
    # the quantization itself: within half a step of the float weight, per row
    step = linear.weight.abs().amax(dim=1, keepdim=True) / 127
    assert ((layer.dequantized() - linear.weight).abs() <= step / 2 + 1e-7).all()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize")
    return write_tiny_checkpoint(root / "phi3"), write_tiny_vision_checkpoint(root / "phi3v")


def test_quantizing_while_loading_equals_quantizing_after(folders):
    while_loading = load_hf_model(folders[0], torch.bfloat16, quantize="int8", progress=False)
    after = quantize_model(load_hf_model(folders[0], torch.bfloat16, progress=False), torch.bfloat16)
    ours, theirs = dict(while_loading.named_buffers()), dict(after.named_buffers())
    int8 = [name for name, value in ours.items() if value.dtype == torch.int8]
    assert len(int8) == 2 * 4 + 1  # qkv, o, gate_up, down per layer, and the LM head
    for name in int8:
        assert torch.equal(ours[name], theirs[name])


def top_tokens(model: TorchModel, prompts) -> list[tuple[int, float]]:
    """(argmax, gap to the runner-up) of the first step of each prompt (token ids, or (text, image))."""
    rows = []
    for prompt in prompts:
        context = min(2048, model.info.context_length)
        runner = model.create_runner(context_length=context, max_sequences=1, max_batch_tokens=context)
        if isinstance(prompt, tuple):
            encoded = model.vision.build(prompt[0], [prompt[1]], num_crops=4)
            logits = runner.forward([Chunk(0, encoded.token_ids, 0, embeddings=encoded.embeddings)])[0]
        else:
            logits = runner.forward([Chunk(0, prompt, 0)])[0]
        best = np.sort(logits)
        rows.append((int(logits.argmax()), float(best[-1] - best[-2])))
    return rows


@pytest.mark.parametrize("which", ["phi3", "phi3_v"])
def test_bf16_and_int8_keep_the_fp32_top_token(folders, which):
    folder = folders[0] if which == "phi3" else folders[1]
    images = [(640, 480), (300, 700), (336, 336), (1000, 200), (500, 500), (200, 900), (800, 450), (120, 90)]
    prompts = PROMPTS if which == "phi3" else PROMPTS[:3] + [
        (f"<|user|>\n<|image_1|>\n{q}<|end|>\n<|assistant|>\n", gradient_image(w, h, seed=seed))
        for seed, ((w, h), q) in enumerate(zip(images, ["What is this?", "Describe it.", "Count them."] * 3))]
    models = {name: TorchModel(folder, dtype=d, quantize=q) for name, (d, q) in PRECISIONS.items()}
    reference = top_tokens(models["fp32"], prompts)
    decided = [i for i, (_, gap) in enumerate(reference) if gap > DECIDED]
    assert len(decided) >= 4 and (which == "phi3" or max(decided) >= 3), reference  # some with an image
    for name in ("bf16", "int8"):
        got = top_tokens(models[name], prompts)
        assert [got[i][0] for i in decided] == [reference[i][0] for i in decided], name
    sizes = {name: m.info.metadata["weight_bytes"] for name, m in models.items()}
    assert sizes["bf16"] < 0.51 * sizes["fp32"]  # the rope frequency tables stay float32
    # int8 linears with bf16 scales; embeddings and norms stay bf16
    assert sizes["int8"] < 0.35 * sizes["fp32"]
    assert "int8 weights" in models["int8"].info.description


def test_unknown_quantization_is_refused(folders):
    with pytest.raises(InvalidParameterError, match="quantize"):
        TorchModel(folders[0], quantize="int4")
