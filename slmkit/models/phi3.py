"""Phi-3 / Phi-3.5 (mini, medium; HF ``phi3``): a Llama with fused projections.

Differences from Llama: ``self_attn.qkv_proj`` holds [Q | K | V] rows and ``mlp.gate_up_proj``
holds [gate | up] rows (HF parameter names, so checkpoints load as they are); 128k models use
longrope (short/long factors, chosen per sequence by the shared rotary embedding); some configs
set a sliding window, which the attention mask applies as transformers does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slmkit.models.config import ModelConfig
from slmkit.models.gguf_names import name_map
from slmkit.models.layers import RMSNorm
from slmkit.models.llama import CausalLM, DecoderBody, DecoderLayer, RopeAttention


class Phi3Attention(RopeAttention):
    """One fused ``qkv_proj`` whose rows are [Q | K | V]; no biases."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__(config, layer)
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.split = (q_size, kv_size, kv_size)
        self.qkv_proj = nn.Linear(config.hidden_size, q_size + 2 * kv_size, bias=False)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=False)

    def project(self, x):
        return self.qkv_proj(x).split(self.split, dim=-1)


class Phi3MLP(nn.Module):
    """``down(silu(gate) * up)`` with gate and up in one matrix."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Phi3ForCausalLM(CausalLM):
    def __init__(self, config: ModelConfig):
        layers = [DecoderLayer(Phi3Attention(config, i), Phi3MLP(config.hidden_size, config.intermediate_size),
                               RMSNorm(config.hidden_size, config.norm_eps), RMSNorm(config.hidden_size, config.norm_eps))
                  for i in range(config.num_layers)]
        super().__init__(config, DecoderBody(config, layers, RMSNorm(config.hidden_size, config.norm_eps)))


# -- GGUF (llama.cpp arch "phi3") ----------------------------------------------------------------
# llama.cpp's converter writes the HF tensors unpermuted (phi3 is a NEOX-rope arch) and keeps
# `ffn_up` fused as [gate | up]. `attn_qkv` is fused too, but llama.cpp also accepts separate
# `attn_q/k/v`: those are renamed to q/k/v parts and concatenated. `rope_factors_long/short` are
# rope settings, not parameters (the config reader takes them).

def gguf_names(config: ModelConfig) -> dict[str, str]:
    """llama.cpp tensor name -> our parameter name (or a q/k/v part of ``qkv_proj``)."""
    return name_map(config.num_layers, {
        "attn_norm": "input_layernorm", "attn_qkv": "self_attn.qkv_proj", "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm", "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj",
    }, kinds=("weight",))


def gguf_state_dict(config: ModelConfig, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our state dict from dequantized llama.cpp tensors."""
    names = gguf_names(config)
    state = {names[name]: value for name, value in tensors.items() if name in names}
    for i in range(config.num_layers):
        prefix = f"model.layers.{i}.self_attn."
        parts = [f"{prefix}{part}.weight" for part in ("q_proj", "k_proj", "v_proj")]
        if all(part in state for part in parts):
            state[prefix + "qkv_proj.weight"] = np.concatenate([state.pop(part) for part in parts], axis=0)
    return state
