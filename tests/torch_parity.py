"""Shared by the parity tests: a tiny random HF model, the same weights in ours, and the checks.

Each check compares against transformers' own implementation in fp32: all-position logits of a
padded batch of different-length prompts, and greedy tokens through `TorchRunner` with other
sequences in the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from slmkit.backends.base import Chunk
from slmkit.backends.torch_runner import TorchRunner
from slmkit.models.cache import ForwardBatch, KVCache
from slmkit.models.registry import build_model


def tiny_pair(hf_config, *, seed: int = 0):
    """(transformers model, our model) holding the same random weights, eval mode, fp32."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    reference = AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager").eval()
    with torch.no_grad():  # random biases/norms too, so a missing one shows up
        for name, param in reference.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    ours = build_model(hf_config.to_dict(), torch.float32)
    missing = ours.load_state_dict(reference.state_dict(), strict=False)
    assert not missing.missing_keys, missing.missing_keys
    assert not [k for k in missing.unexpected_keys if "rotary" not in k], missing.unexpected_keys
    return reference, ours.eval()


def reference_logits(reference, prompt: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return reference(torch.tensor([prompt])).logits[0]


def batch_logits(model, prompts: list[list[int]]) -> list[torch.Tensor]:
    """All-position logits of our model for several prompts in one padded forward."""
    cfg = model.config
    longest = max(len(p) for p in prompts)
    cache = KVCache(cfg.num_layers, len(prompts), cfg.num_kv_heads, longest, cfg.head_dim, torch.float32)
    ids = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(prompt)
    use_long = [cfg.rope.uses_long(len(p)) for p in prompts] if cfg.rope.kind == "longrope" else None
    batch = ForwardBatch.build([0] * len(prompts), [len(p) for p in prompts], list(range(len(prompts))),
                               "cpu", use_long)
    with torch.inference_mode():
        logits = model.logits(model.hidden(ids, batch, cache))
    return [logits[row, : len(p)] for row, p in enumerate(prompts)]


def reference_greedy(reference, prompt: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = reference.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    return out[0, len(prompt):].tolist()


def runner_greedy(model, prompts: list[list[int]], n: int, context: int = 256) -> list[list[int]]:
    """Greedy decode of all prompts together through `TorchRunner` (prefill chunks + batched decode)."""
    runner = TorchRunner(model, context_length=context, max_sequences=len(prompts) + 1, max_batch_tokens=64)
    logits = []
    for seq, prompt in enumerate(prompts):  # prefill in chunks of at most 64 tokens
        for start in range(0, len(prompt), 64):
            piece = prompt[start : start + 64]
            out = runner.forward([Chunk(seq, piece, start, want_logits=start + 64 >= len(prompt))])
        logits.append(out[0])
    tokens = [[int(row.argmax())] for row in logits]
    for _ in range(n - 1):
        chunks = [Chunk(seq, [toks[-1]], len(prompts[seq]) + len(toks) - 1) for seq, toks in enumerate(tokens)]
        out = runner.forward(chunks)
        for seq, row in enumerate(out):
            tokens[seq].append(int(row.argmax()))
    return tokens


def runner_decode_logits(model, sequences: list[list[int]], prompt_length: int) -> list[torch.Tensor]:
    """Prefill each sequence's first ``prompt_length`` tokens, then feed the rest one token per step
    for all sequences together; the logits of every step, ``[steps + 1, vocab]`` per sequence."""
    runner = TorchRunner(model, context_length=128, max_sequences=len(sequences))
    rows = [[runner.forward([Chunk(seq, tokens[:prompt_length], 0)])[0]] for seq, tokens in enumerate(sequences)]
    for pos in range(prompt_length, len(sequences[0])):
        out = runner.forward([Chunk(seq, [tokens[pos]], pos) for seq, tokens in enumerate(sequences)])
        for seq, row in enumerate(out):
            rows[seq].append(row)
    return [torch.from_numpy(np.stack(r)) for r in rows]


def check_decode_across_switch_point(reference, ours, original: int) -> None:
    """Decoding from below a longrope model's ``original_max_position_embeddings`` to past it:
    every step's logits equal transformers' on the whole prefix (long factors for all of it)."""
    start = original - 6
    sequences = [[(k * i) % 90 + 3 for i in range(original + 6)] for k in (3, 7)]
    for tokens, logits in zip(sequences, runner_decode_logits(ours, sequences, start)):
        for step, row in enumerate(logits):
            expected = reference_logits(reference, tokens[: start + step])[-1]
            assert (row - expected).abs().max().item() < 1e-4, start + step
