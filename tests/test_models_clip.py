"""Our CLIP vision tower against transformers' `CLIPVisionModel` on tiny random configs (fp32)."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from slmkit.errors import ModelLoadError  # noqa: E402
from slmkit.models.clip import CLIPVisionConfig, CLIPVisionModel  # noqa: E402

TOWERS = {
    "phi3v-geometry": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=336, patch_size=14),
    "small-image": dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3,
                        image_size=64, patch_size=16),
}


def pair(values: dict, seed: int = 0):
    torch.manual_seed(seed)
    reference = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(hidden_act="quick_gelu", **values)).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a missing one shows up
        for name, param in reference.named_parameters():
            if "norm" in name or name.endswith("bias") or "class_embedding" in name:
                param.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    ours = CLIPVisionModel(CLIPVisionConfig.from_dict(values)).eval()
    # transformers 5 has no `vision_model.` level; the released checkpoints (and our names) do
    state = {f"vision_model.{k}": v for k, v in reference.state_dict().items() if "position_ids" not in k}
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return reference, ours


@pytest.mark.parametrize("name", TOWERS)
def test_every_hidden_state_matches_transformers(name):
    values = TOWERS[name]
    reference, ours = pair(values)
    pixels = torch.randn(2, 3, values["image_size"], values["image_size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(pixels, output_hidden_states=True).hidden_states
        got = ours.hidden_states(pixels)
    assert len(got) == len(expected) == values["num_hidden_layers"] + 1
    for mine, theirs in zip(got, expected):
        assert (mine - theirs).abs().max().item() < 1e-5
    with torch.no_grad():  # Phi-3-vision's feature: penultimate layer, class token dropped
        features = ours.features(pixels, -2)
    assert features.shape == (2, (values["image_size"] // values["patch_size"]) ** 2, values["hidden_size"])
    assert (features - expected[-2][:, 1:]).abs().max().item() < 1e-5


def test_default_tower_is_vit_large_14_336():
    config = CLIPVisionConfig.from_dict(None)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
            config.image_size, config.patch_size, config.patches_per_side) == (1024, 24, 16, 4096, 336, 14, 24)


def test_bad_tower_configs_are_refused():
    with pytest.raises(ModelLoadError, match="multiple of patch_size"):
        CLIPVisionConfig.from_dict({"image_size": 100, "patch_size": 14})
    with pytest.raises(ModelLoadError, match="hidden_act"):
        CLIPVisionConfig.from_dict({"hidden_act": "relu6"})
    with pytest.raises(ModelLoadError, match="bad field"):
        CLIPVisionConfig.from_dict({"hidden_size": "wide"})
