"""Parity of our PhiMoE with transformers' on a tiny random config (fp32): longrope with the
config's mscales, attention and LM-head biases, 4 experts top-2 with sparsemixer routing.

transformers 5.24's `PhimoeRotaryEmbedding` calls the longrope init without the sequence length,
so it always rotates with the *short* factors (only the mscale switches) — a regression: 4.x and
the released model's own code use the long factors past ``original_max_position_embeddings``,
as does Phi-3. The reference here is patched back to that behaviour (`use_long_factors`).
"""

import functools
import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from slmkit.models import phimoe  # noqa: E402
from tests.test_models_phi3 import LONGROPE_PROMPTS, ORIGINAL, PROMPTS  # noqa: E402
from tests.torch_parity import (  # noqa: E402
    batch_logits, check_decode_across_switch_point, reference_greedy, reference_logits, runner_greedy, tiny_pair)

EXPERTS = 4


def phimoe_config(**overrides):
    rng = random.Random(0)
    rope = {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": ORIGINAL,
            "short_factor": [rng.uniform(1, 4) for _ in range(8)], "long_factor": [rng.uniform(1, 4) for _ in range(8)],
            "short_mscale": 1.1, "long_mscale": 1.3}
    values = dict(vocab_size=97, hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, num_local_experts=EXPERTS, num_experts_per_tok=2, router_jitter_noise=0.01,
                  attention_bias=True, lm_head_bias=True, max_position_embeddings=128, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, rope_parameters=rope)
    values.update(overrides)
    return transformers.PhimoeConfig(**values)


def use_long_factors(reference):
    """Make transformers' PhiMoE rotary embedding pick the long factors past the switch point."""
    rotary = reference.model.rotary_emb
    init, forward = rotary.rope_init_fn, rotary.forward

    def patched(x, position_ids=None):
        rotary.rope_init_fn = functools.partial(init, seq_len=int(position_ids.max()) + 1)
        return forward(x, position_ids)

    rotary.forward = patched
    return reference


def close_routers(reference, ours):
    """Random routers leave every runner-up far past sparsemixer's relative 2 % gap (weights are
    exactly 1, the masks never matter). Give each router a large shared logit plus a few percent of
    spread, so some experts fall inside the gap and some outside, in both models."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for theirs, mine in zip(reference.model.layers, ours.model.layers):
            direction = torch.randn(64, generator=generator)
            direction /= direction.norm()
            theirs.post_attention_layernorm.bias.copy_(20 * direction)
            theirs.mlp.router.weight.copy_(direction + 0.02 * torch.randn(EXPERTS, 64, generator=generator))
            mine.post_attention_layernorm.bias.copy_(theirs.post_attention_layernorm.bias)
            mine.mlp.router.weight.copy_(theirs.mlp.router.weight)


def pair(**overrides):
    reference, ours = tiny_pair(phimoe_config(**overrides))
    close_routers(reference, ours)
    return use_long_factors(reference), ours


def test_sparsemixer_matches_transformers():
    from transformers.models.phimoe.modeling_phimoe import sparsemixer as reference_sparsemixer

    torch.manual_seed(0)
    logits = 3.0 + 0.05 * torch.randn(500, 16)  # close logits: the relative-gap masks matter
    logits[:50] = torch.randn(50, 16)  # mixed signs
    weights, experts = phimoe.sparsemixer(logits, 0.01)
    expected_weights, expected_experts = reference_sparsemixer(logits, jitter_eps=0.01, training=False)
    assert torch.equal(experts, expected_experts)
    assert torch.allclose(weights, expected_weights, atol=1e-7)
    assert (weights < 0.999).any() and (weights > 0.999).any()


def test_routing_exercises_the_sparsemixer_masks():
    reference, _ = pair()
    weights = []
    hook = reference.model.layers[0].mlp.router.register_forward_hook(lambda m, i, out: weights.append(out[1]))
    reference_logits(reference, list(range(3, 60)))
    hook.remove()
    assert ((weights[0] > 0.01) & (weights[0] < 0.99)).float().mean() > 0.2


@pytest.mark.parametrize("overrides", [{}, {"sliding_window": 9}], ids=["longrope", "sliding-window"])
def test_phimoe_logits_match_transformers(overrides):
    reference, ours = pair(**overrides)
    for prompt, logits in zip(LONGROPE_PROMPTS, batch_logits(ours, LONGROPE_PROMPTS)):
        assert (logits - reference_logits(reference, prompt)).abs().max().item() < 1e-4


def test_phimoe_default_rope_logits_match_transformers():
    reference, ours = pair(rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    for prompt, logits in zip(PROMPTS, batch_logits(ours, PROMPTS)):
        assert (logits - reference_logits(reference, prompt)).abs().max().item() < 1e-4


def test_phimoe_longrope_decode_across_the_switch_point_matches_transformers():
    check_decode_across_switch_point(*pair(), ORIGINAL)


def test_phimoe_greedy_through_runner_matches_transformers():
    reference, ours = pair()
    prompts = PROMPTS + [[(3 * i) % 90 + 3 for i in range(ORIGINAL - 7)]]  # crosses the switch point
    expected = [reference_greedy(reference, p, 20) for p in prompts]
    assert runner_greedy(ours, prompts, 20, context=128) == expected


def test_hf_checkpoint_state_dict_reads_the_released_layout():
    _, ours = pair()
    state = ours.state_dict()
    released = {}
    for name, value in state.items():
        if ".mlp.experts." in name or ".mlp.router." in name:
            continue
        released[name] = value
    for i in range(ours.config.num_layers):
        ours_prefix, theirs = f"model.layers.{i}.mlp.", f"model.layers.{i}.block_sparse_moe."
        released[theirs + "gate.weight"] = state[ours_prefix + "router.weight"]
        gate, up = state[ours_prefix + "experts.gate_up_proj"].chunk(2, dim=1)
        for e in range(EXPERTS):
            released[f"{theirs}experts.{e}.w1.weight"] = gate[e]
            released[f"{theirs}experts.{e}.w3.weight"] = up[e]
            released[f"{theirs}experts.{e}.w2.weight"] = state[ours_prefix + "experts.down_proj"][e]
    converted = phimoe.hf_checkpoint_state_dict(ours.config, released)
    assert set(converted) == set(state)
    assert all(torch.equal(converted[name], state[name]) for name in state)


def test_phimoe_gguf_state_dict_rebuilds_our_parameters():
    _, ours = pair()
    config, state = ours.config, ours.state_dict()
    gguf = {"token_embd.weight": state["model.embed_tokens.weight"], "rope_factors_long.weight": torch.ones(8)}
    for theirs, mine in {"output_norm": "model.norm", "output": "lm_head"}.items():
        for kind in ("weight", "bias"):
            gguf[f"{theirs}.{kind}"] = state[f"{mine}.{kind}"]
    per_layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm"}
    for i in range(config.num_layers):
        layer = f"model.layers.{i}."
        for theirs, mine in per_layer.items():
            for kind in ("weight", "bias"):
                gguf[f"blk.{i}.{theirs}.{kind}"] = state[f"{layer}{mine}.{kind}"]
        gguf[f"blk.{i}.ffn_gate_inp.weight"] = state[layer + "mlp.router.weight"]
        gate, up = state[layer + "mlp.experts.gate_up_proj"].chunk(2, dim=1)  # w1, w3 stacked
        gguf[f"blk.{i}.ffn_gate_exps.weight"], gguf[f"blk.{i}.ffn_up_exps.weight"] = gate, up
        gguf[f"blk.{i}.ffn_down_exps.weight"] = state[layer + "mlp.experts.down_proj"]
    rebuilt = phimoe.gguf_state_dict(config, {name: value.numpy() for name, value in gguf.items()})
    assert set(rebuilt) == set(state)
    for name, value in rebuilt.items():
        assert torch.equal(torch.from_numpy(value), state[name]), name
