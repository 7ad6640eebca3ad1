"""Building blocks shared by the architectures: RMSNorm, attention over the KV cache, SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slmkit.models.cache import ForwardBatch, KVCache


class RMSNorm(nn.Module):
    """``w * x / rms(x)``, computed in fp32 whatever the model dtype (as the reference does)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def cached_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int,
                     batch: ForwardBatch, cache: KVCache, sliding_window: int | None) -> torch.Tensor:
    """Attention of new tokens over their sequences' cache.

    ``q`` is ``[B, T, heads, D]``, ``k``/``v`` ``[B, T, kv_heads, D]`` (rope applied); they are
    written to the cache first. Returns ``[B, T, heads * D]``.
    """
    keys, values = cache.update(layer, batch, k, v)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), keys, values, attn_mask=batch.mask(sliding_window),
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` with separate gate and up projections (Llama)."""

    def __init__(self, hidden: int, intermediate: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.up_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
