"""Parity of our Phi-3 with transformers' on tiny random configs (fp32): default and partial rope,
longrope past ``original_max_position_embeddings``, sliding window; plus the GGUF name map."""

import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from slmkit.models import phi3  # noqa: E402
from slmkit.models.config import ModelConfig  # noqa: E402
from tests.torch_parity import (  # noqa: E402
    batch_logits, check_decode_across_switch_point, reference_greedy, reference_logits, runner_greedy, tiny_pair)

ORIGINAL = 32  # longrope switch point of the tiny configs
PROMPTS = [[1, 5, 9, 2, 7, 3, 11], [1, 40, 41, 42], list(range(3, 60)), [1, 7]]
# some below the switch point, one exactly at it, some past it
LONGROPE_PROMPTS = [[1, 5, 9, 2, 7, 3, 11], list(range(3, 60)), [(7 * i) % 90 + 3 for i in range(ORIGINAL)],
                    [(5 * i) % 90 + 3 for i in range(ORIGINAL + 1)], [1, 7], list(range(20, 90))]


def factors(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(1.0, 4.0) for _ in range(n)]


def phi3_config(*, longrope: bool = False, partial: float = 1.0, **overrides):
    values = dict(vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  original_max_position_embeddings=ORIGINAL, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": partial}
    if longrope:
        half = int(16 * partial) // 2
        rope.update(rope_type="longrope", short_factor=factors(half, 1), long_factor=factors(half, 2))
    values.update(overrides)
    return transformers.Phi3Config(rope_parameters=rope, **values)


CONFIGS = {
    "gqa": dict(),
    "partial-rotary": dict(partial=0.5),
    "longrope": dict(longrope=True),
    "longrope-partial": dict(longrope=True, partial=0.5),
    "sliding-window": dict(sliding_window=9),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_phi3_logits_match_transformers(name):
    reference, ours = tiny_pair(phi3_config(**CONFIGS[name]))
    prompts = LONGROPE_PROMPTS if "longrope" in name else PROMPTS
    for prompt, logits in zip(prompts, batch_logits(ours, prompts)):
        assert (logits - reference_logits(reference, prompt)).abs().max().item() < 1e-4


def test_phi3_longrope_config_is_read_as_longrope():
    _, ours = tiny_pair(phi3_config(longrope=True))
    rope = ours.config.rope
    assert rope.kind == "longrope" and rope.original_max_position == ORIGINAL
    assert rope.short_mscale == rope.long_mscale > 1.0  # sqrt(1 + ln 4 / ln 32)


@pytest.mark.parametrize("name", ["gqa", "longrope", "sliding-window"])
def test_phi3_greedy_through_runner_matches_transformers(name):
    reference, ours = tiny_pair(phi3_config(**CONFIGS[name]))
    prompts = PROMPTS
    if name == "longrope":  # [25 tokens] crosses the switch point while generating
        prompts = PROMPTS + [[(3 * i) % 90 + 3 for i in range(ORIGINAL - 7)]]
    expected = [reference_greedy(reference, p, 20) for p in prompts]
    assert runner_greedy(ours, prompts, 20, context=128) == expected


def test_phi3_longrope_decode_across_the_switch_point_matches_transformers():
    """Decoding from below ``original_max_position_embeddings`` to past it: every step's logits
    equal transformers' on the whole prefix (which uses the long factors for all of it)."""
    check_decode_across_switch_point(*tiny_pair(phi3_config(longrope=True)), ORIGINAL)


def gguf_tensors_from(state: dict[str, torch.Tensor], config: ModelConfig, *, fused_qkv: bool):
    """What llama.cpp's converter writes for these weights (phi3 arch)."""
    out = {"token_embd.weight": state["model.embed_tokens.weight"], "output_norm.weight": state["model.norm.weight"],
           "output.weight": state["lm_head.weight"], "rope_factors_long.weight": torch.ones(8)}
    q_size, kv_size = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    for i in range(config.num_layers):
        ours = f"model.layers.{i}."
        qkv = state[ours + "self_attn.qkv_proj.weight"]
        if fused_qkv:
            out[f"blk.{i}.attn_qkv.weight"] = qkv
        else:
            q, k, v = qkv.split((q_size, kv_size, kv_size))
            out.update({f"blk.{i}.attn_q.weight": q, f"blk.{i}.attn_k.weight": k, f"blk.{i}.attn_v.weight": v})
        out[f"blk.{i}.attn_norm.weight"] = state[ours + "input_layernorm.weight"]
        out[f"blk.{i}.attn_output.weight"] = state[ours + "self_attn.o_proj.weight"]
        out[f"blk.{i}.ffn_norm.weight"] = state[ours + "post_attention_layernorm.weight"]
        out[f"blk.{i}.ffn_up.weight"] = state[ours + "mlp.gate_up_proj.weight"]
        out[f"blk.{i}.ffn_down.weight"] = state[ours + "mlp.down_proj.weight"]
    return {name: value.numpy() for name, value in out.items()}


@pytest.mark.parametrize("fused_qkv", [True, False], ids=["attn_qkv", "attn_q-k-v"])
def test_phi3_gguf_state_dict_rebuilds_our_parameters(fused_qkv):
    _, ours = tiny_pair(phi3_config())
    state = ours.state_dict()
    rebuilt = phi3.gguf_state_dict(ours.config, gguf_tensors_from(state, ours.config, fused_qkv=fused_qkv))
    assert set(rebuilt) == set(state)
    for name, value in rebuilt.items():
        assert torch.equal(torch.from_numpy(value), state[name]), name
