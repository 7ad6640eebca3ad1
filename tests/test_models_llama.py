"""Parity of our Llama with transformers' on a tiny random config (fp32)."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.torch_parity import batch_logits, reference_greedy, reference_logits, runner_greedy, tiny_pair  # noqa: E402

PROMPTS = [[1, 5, 9, 2, 7, 3, 11], [1, 40, 41, 42], list(range(3, 60)), [1, 7]]


def llama_config(**overrides):
    values = dict(vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
    values.update(overrides)
    return transformers.LlamaConfig(**values)


@pytest.mark.parametrize("overrides", [
    {},
    {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True},
    {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
    {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64}},
], ids=["gqa", "tied+bias", "linear-rope", "llama3-rope"])
def test_llama_logits_match_transformers(overrides):
    reference, ours = tiny_pair(llama_config(**overrides))
    for prompt, logits in zip(PROMPTS, batch_logits(ours, PROMPTS)):
        assert (logits - reference_logits(reference, prompt)).abs().max().item() < 1e-4


def test_llama_greedy_through_runner_matches_transformers():
    reference, ours = tiny_pair(llama_config())
    expected = [reference_greedy(reference, p, 20) for p in PROMPTS]
    assert runner_greedy(ours, PROMPTS, 20) == expected
