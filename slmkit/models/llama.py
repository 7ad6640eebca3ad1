"""Llama (SmolLM, SmolLM2, Llama 2/3, TinyLlama, ...): the decoder the others are variations of.

Parameter names are Hugging Face's, so a safetensors checkpoint loads as it is; `GGUF_NAMES`
maps llama.cpp's tensor names onto them (the one place that knows both).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from slmkit.models.cache import ForwardBatch, KVCache
from slmkit.models.config import ModelConfig
from slmkit.models.gguf_names import name_map
from slmkit.models.layers import RMSNorm, SwiGLU, cached_attention
from slmkit.models.rope import RotaryEmbedding, apply_rope


class RopeAttention(nn.Module):
    """Rotary attention over the KV cache; subclasses say how ``x`` becomes q, k and v."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.heads, self.kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.sliding_window = config.sliding_window

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x, cos, sin, batch: ForwardBatch, cache: KVCache):
        b, t, _ = x.shape
        q, k, v = self.project(x)
        q = apply_rope(q.view(b, t, self.heads, self.head_dim), cos, sin)
        k = apply_rope(k.view(b, t, self.kv_heads, self.head_dim), cos, sin)
        v = v.view(b, t, self.kv_heads, self.head_dim)
        out = cached_attention(q, k, v, layer=self.layer, batch=batch, cache=cache,
                               sliding_window=self.sliding_window)
        return self.o_proj(out)


class LlamaAttention(RopeAttention):
    """Separate q/k/v projections (biased when ``attention_bias``)."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__(config, layer)
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=bias)

    def project(self, x):
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)


class DecoderLayer(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``+ mlp(norm(x))`` (every model here)."""

    def __init__(self, self_attn: nn.Module, mlp: nn.Module, input_layernorm: nn.Module,
                 post_attention_layernorm: nn.Module):
        super().__init__()
        self.self_attn = self_attn
        self.mlp = mlp
        self.input_layernorm = input_layernorm
        self.post_attention_layernorm = post_attention_layernorm

    def forward(self, x, cos, sin, batch, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, batch, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderBody(nn.Module):
    """``model.*``: embeddings, layers, final norm (shared by every architecture here)."""

    def __init__(self, config: ModelConfig, layers: list[nn.Module], norm: nn.Module):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.rotary_emb = RotaryEmbedding(config.rope)

    def forward(self, input_ids: torch.Tensor, batch: ForwardBatch, cache: KVCache,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        cos, sin = self.rotary_emb(batch.positions, batch.use_long_rope, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, batch, cache)
        return self.norm(x)


class CausalLM(nn.Module):
    """A decoder plus its LM head: ``hidden()`` for the new tokens, ``logits()`` for chosen rows."""

    def __init__(self, config: ModelConfig, body: DecoderBody):
        super().__init__()
        self.config = config
        self.model = body
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.lm_head_bias)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def hidden(self, input_ids: torch.Tensor, batch: ForwardBatch, cache: KVCache,
               inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states ``[B, T, hidden]``; ``inputs_embeds`` (``[B, T, hidden]``) replaces the
        token embeddings when given (image features in a vision prompt)."""
        return self.model(input_ids, batch, cache, inputs_embeds)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


class LlamaForCausalLM(CausalLM):
    def __init__(self, config: ModelConfig):
        layers = [DecoderLayer(LlamaAttention(config, i),
                               SwiGLU(config.hidden_size, config.intermediate_size, config.mlp_bias),
                               RMSNorm(config.hidden_size, config.norm_eps), RMSNorm(config.hidden_size, config.norm_eps))
                  for i in range(config.num_layers)]
        super().__init__(config, DecoderBody(config, layers, RMSNorm(config.hidden_size, config.norm_eps)))


def unpermute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's convert-time row permutation of Q/K (GGML rotates adjacent pairs; we
    rotate halves like the HF checkpoint)."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_names(config: ModelConfig) -> dict[str, str]:
    """llama.cpp tensor name -> our parameter name."""
    return name_map(config.num_layers, {
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"})


def gguf_fix_tensor(config: ModelConfig, name: str, value: np.ndarray) -> np.ndarray:
    """Per-tensor fixes after renaming: the Q/K rope permutation."""
    if name.endswith("self_attn.q_proj.weight"):
        return unpermute_rope_rows(value, config.num_heads)
    if name.endswith("self_attn.k_proj.weight"):
        return unpermute_rope_rows(value, config.num_kv_heads)
    return value


def gguf_state_dict(config: ModelConfig, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our state dict from dequantized llama.cpp tensors."""
    names = gguf_names(config)
    return {names[name]: gguf_fix_tensor(config, names[name], value)
            for name, value in tensors.items() if name in names}
