"""Rotary position embeddings: default, linear, llama3 and longrope (Phi-3 / Phi-3.5).

cos/sin are computed per row of the batch, so each sequence picks its own longrope factors:
long once the sequence is longer than ``original_max_position_embeddings``, short before. The
reference (transformers) decides with ``max(position_ids) + 1`` over the whole batch, which is
the same thing for a batch of one; the runner re-prefills a sequence whose regime changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class RopeConfig:
    kind: str  # "default" | "linear" | "llama3" | "longrope"
    theta: float
    dim: int  # rotary dims per head (head_dim * partial_rotary_factor)
    factor: float = 1.0  # linear / llama3 scaling
    original_max_position: int = 0  # longrope switch point, llama3 original context
    short_factor: tuple[float, ...] = ()
    long_factor: tuple[float, ...] = ()
    short_mscale: float = 1.0  # multiplies cos and sin (longrope "attention factor")
    long_mscale: float = 1.0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0

    @classmethod
    def from_hf(cls, config: dict[str, Any], head_dim: int) -> "RopeConfig":
        """Read rope settings from a HF ``config.json`` (old ``rope_scaling`` or new ``rope_parameters``)."""
        params = dict(config.get("rope_parameters") or {})
        params.update(config.get("rope_scaling") or {})
        theta = float(params.get("rope_theta", config.get("rope_theta", 10000.0)))
        partial = float(params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)))
        dim = int(head_dim * partial)
        kind = params.get("rope_type", params.get("type", "default")) or "default"
        if kind in ("su", "yarn") and "short_factor" in params:  # Phi3Config renames legacy types
            kind = "longrope"
        max_position = int(config.get("max_position_embeddings", 4096))
        original = int(params.get("original_max_position_embeddings",
                                  config.get("original_max_position_embeddings", max_position)))
        if kind == "default":
            return cls("default", theta, dim)
        if kind == "linear":
            return cls("linear", theta, dim, factor=float(params["factor"]))
        if kind == "llama3":
            return cls("llama3", theta, dim, factor=float(params["factor"]), original_max_position=original,
                       low_freq_factor=float(params.get("low_freq_factor", 1.0)),
                       high_freq_factor=float(params.get("high_freq_factor", 4.0)))
        if kind == "longrope":
            if "short_mscale" in params:  # PhiMoE: the config gives both scales outright
                short_m, long_m = float(params["short_mscale"]), float(params["long_mscale"])
            else:
                attention = params.get("attention_factor")
                if attention is None:
                    scale = float(params.get("factor") or max_position / original)
                    attention = 1.0 if scale <= 1.0 else math.sqrt(1 + math.log(scale) / math.log(original))
                short_m = long_m = float(attention)
            return cls("longrope", theta, dim, original_max_position=original,
                       short_factor=tuple(map(float, params["short_factor"])),
                       long_factor=tuple(map(float, params["long_factor"])),
                       short_mscale=short_m, long_mscale=long_m)
        raise NotImplementedError(f"rope type {kind!r} is not supported by the torch engine")

    def uses_long(self, length: int) -> bool:
        """Whether a sequence of ``length`` tokens uses the long factors (longrope only)."""
        return self.kind == "longrope" and length > self.original_max_position


class RotaryEmbedding(torch.nn.Module):
    def __init__(self, config: RopeConfig):
        super().__init__()
        self.config = config
        self.materialize()

    def materialize(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the frequency buffers, on ``device`` (default: the current default device);
        a model built on the meta device gets real ones this way once its weights are in."""
        config = self.config
        exponents = torch.arange(0, config.dim, 2, dtype=torch.int64, device=device).float() / config.dim
        base = config.theta ** exponents
        if config.kind == "longrope":
            short = 1.0 / (torch.tensor(config.short_factor, dtype=torch.float32, device=device) * base)
            long = 1.0 / (torch.tensor(config.long_factor, dtype=torch.float32, device=device) * base)
        else:
            short = long = self._scaled(1.0 / base)
        self.register_buffer("short_inv_freq", short, persistent=False)
        self.register_buffer("long_inv_freq", long, persistent=False)

    def _scaled(self, inv_freq: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.kind == "linear":
            return inv_freq / cfg.factor
        if cfg.kind == "llama3":
            low_wavelen = cfg.original_max_position / cfg.low_freq_factor
            high_wavelen = cfg.original_max_position / cfg.high_freq_factor
            wavelen = 2 * math.pi / inv_freq
            scaled = torch.where(wavelen > low_wavelen, inv_freq / cfg.factor, inv_freq)
            smooth = (cfg.original_max_position / wavelen - cfg.low_freq_factor) / (
                cfg.high_freq_factor - cfg.low_freq_factor)
            smoothed = (1 - smooth) * scaled / cfg.factor + smooth * scaled
            medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
            return torch.where(medium, smoothed, scaled)
        return inv_freq

    def forward(self, positions: torch.Tensor, use_long: torch.Tensor | None, dtype: torch.dtype):
        """cos, sin of shape ``[B, T, dim]`` for positions ``[B, T]``; ``use_long`` is ``[B]`` bool."""
        cfg = self.config
        if cfg.kind == "longrope" and use_long is not None:
            inv_freq = torch.where(use_long[:, None], self.long_inv_freq, self.short_inv_freq)[:, None, :]
            mscale = torch.where(use_long, cfg.long_mscale, cfg.short_mscale).to(torch.float32)[:, None, None]
        else:
            inv_freq = self.short_inv_freq
            mscale = cfg.short_mscale if cfg.kind == "longrope" else 1.0
        freqs = positions[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * mscale).to(dtype), (emb.sin() * mscale).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, T, heads, head_dim]`` (NeoX / rotate-half); dims past ``cos``'s are kept."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    dim = cos.shape[-1]
    if dim == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    rot, rest = x[..., :dim], x[..., dim:]
    return torch.cat((rot * cos + rotate_half(rot) * sin, rest), dim=-1)
