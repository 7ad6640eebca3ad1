"""Phi-3.5-MoE (HF ``phimoe``): Llama attention (biased), LayerNorm, and a top-2 sparse MoE.

Parameter names follow transformers 5 (``mlp.router``, experts stacked as 3-D
``mlp.experts.gate_up_proj`` [E, 2*inter, hidden] and ``mlp.experts.down_proj`` [E, hidden, inter]),
so its state dicts load as they are; `hf_checkpoint_state_dict` converts the released checkpoint's
per-expert ``block_sparse_moe.experts.{e}.w1/w2/w3`` layout.

Routing is sparsemixer's inference path: pick the best expert, weight it by a softmax over the
experts whose logits are within a relative ``2 * router_jitter_noise`` of it, then the same for
the runner-up among the rest. The two weights are not renormalised.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slmkit.errors import ModelLoadError
from slmkit.models.config import ModelConfig
from slmkit.models.gguf_names import name_map
from slmkit.models.llama import CausalLM, DecoderBody, DecoderLayer, LlamaAttention


def sparsemixer(logits: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-2 routing weights and expert indices, both ``[N, 2]``, for router logits ``[N, E]``."""

    def pick(candidates: torch.Tensor):
        best, index = candidates.max(dim=-1, keepdim=True)
        # the relative gap is measured against the unmasked logits, as in the reference
        far = (best - logits) / logits.abs().clamp(min=best) > 2 * epsilon
        weight = candidates.masked_fill(far, float("-inf")).softmax(dim=-1).gather(-1, index)
        return weight, index

    first_weight, first = pick(logits)
    second_weight, second = pick(logits.scatter(-1, first, float("-inf")))
    return torch.cat((first_weight, second_weight), dim=-1), torch.cat((first, second), dim=-1)


class PhiMoEExperts(nn.Module):
    """SwiGLU experts stacked in 3-D tensors; each token runs only through its chosen experts."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        e, hidden, inter = config.num_experts, config.hidden_size, config.intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * inter, hidden))
        self.down_proj = nn.Parameter(torch.empty(e, hidden, inter))

    def forward(self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, hidden]``; ``experts``/``weights`` ``[N, k]``."""
        out = torch.zeros_like(x)
        flat = experts.flatten()
        order = flat.argsort(stable=True)  # group the (token, choice) pairs by expert
        tokens = order // experts.shape[1]
        scale = weights.flatten()[order, None].to(x.dtype)
        counts = torch.bincount(flat, minlength=self.gate_up_proj.shape[0]).tolist()
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            end = start + count
            picked = tokens[start:end]
            gate, up = F.linear(x[picked], self.gate_up_proj[expert]).chunk(2, dim=-1)
            out.index_add_(0, picked, F.linear(F.silu(gate) * up, self.down_proj[expert]) * scale[start:end])
            start = end
        return out


class PhiMoESparseBlock(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.num_experts_per_token != 2:
            raise ModelLoadError(f"PhiMoE routes to exactly 2 experts per token (sparsemixer), "
                                 f"the config asks for {config.num_experts_per_token}")
        self.epsilon = config.router_jitter_noise
        self.router = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = PhiMoEExperts(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        weights, experts = sparsemixer(self.router(flat), self.epsilon)
        return self.experts(flat, experts, weights).view(x.shape)


class PhiMoEForCausalLM(CausalLM):
    def __init__(self, config: ModelConfig):
        layers = [DecoderLayer(LlamaAttention(config, i), PhiMoESparseBlock(config),
                               nn.LayerNorm(config.hidden_size, eps=config.norm_eps),
                               nn.LayerNorm(config.hidden_size, eps=config.norm_eps))
                  for i in range(config.num_layers)]
        norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        super().__init__(config, DecoderBody(config, layers, norm))


_EXPERT = re.compile(r"(model\.layers\.\d+\.)block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight")


def hf_checkpoint_state_dict(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict from the released checkpoint's tensors: ``block_sparse_moe.gate`` becomes
    ``mlp.router``, per-expert ``w1`` (gate), ``w3`` (up), ``w2`` (down) are stacked; the rest
    passes through (a transformers 5 state dict comes back unchanged)."""
    out, experts = {}, {}
    for name, value in tensors.items():
        match = _EXPERT.fullmatch(name)
        if match:
            prefix, index, kind = match.groups()
            experts.setdefault(prefix, {})[(kind, int(index))] = value
        else:
            out[name.replace(".block_sparse_moe.gate.", ".mlp.router.")] = value
    for prefix, parts in experts.items():
        def stacked(kind):
            return torch.stack([parts[(kind, e)] for e in range(config.num_experts)])
        out[prefix + "mlp.experts.gate_up_proj"] = torch.cat((stacked("w1"), stacked("w3")), dim=1)
        out[prefix + "mlp.experts.down_proj"] = stacked("w2")
    return out


# -- GGUF (llama.cpp arch "phimoe") --------------------------------------------------------------
# Same layout as phi3 with separate q/k/v, plus biases, the router (`ffn_gate_inp`) and experts
# stacked per kind (`ffn_gate_exps` = w1, `ffn_up_exps` = w3, `ffn_down_exps` = w2, numpy shape
# [E, out, in]). Q/K are not permuted (NEOX rope). Gate and up parts are concatenated here.

def gguf_names(config: ModelConfig) -> dict[str, str]:
    """llama.cpp tensor name -> our parameter name (or a gate/up part of ``experts.gate_up_proj``)."""
    names = name_map(config.num_layers, {
        "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm"})
    for i in range(config.num_layers):
        layer = f"model.layers.{i}."
        names[f"blk.{i}.ffn_gate_inp.weight"] = layer + "mlp.router.weight"
        names[f"blk.{i}.ffn_gate_exps.weight"] = layer + "mlp.experts.gate_proj"
        names[f"blk.{i}.ffn_up_exps.weight"] = layer + "mlp.experts.up_proj"
        names[f"blk.{i}.ffn_down_exps.weight"] = layer + "mlp.experts.down_proj"
    return names


def gguf_state_dict(config: ModelConfig, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our state dict from dequantized llama.cpp tensors."""
    names = gguf_names(config)
    state = {names[name]: value for name, value in tensors.items() if name in names}
    for i in range(config.num_layers):
        prefix = f"model.layers.{i}.mlp.experts."
        if prefix + "gate_proj" in state:
            state[prefix + "gate_up_proj"] = np.concatenate(
                (state.pop(prefix + "gate_proj"), state.pop(prefix + "up_proj")), axis=1)
    return state
