"""`ModelConfig`: the shape of a decoder, read once from a HF ``config.json`` (or a GGUF header)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slmkit.errors import ModelLoadError
from slmkit.models.rope import RopeConfig


@dataclass
class ModelConfig:
    model_type: str  # "llama" | "phi3" | "phimoe" (our registry key)
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope: RopeConfig
    norm_eps: float = 1e-5
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    num_experts: int = 0  # PhiMoE
    num_experts_per_token: int = 0
    router_jitter_noise: float = 0.0
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_hf(cls, config: dict[str, Any], model_type: str) -> "ModelConfig":
        try:
            heads = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            head_dim = int(config.get("head_dim") or hidden // heads)
            eos = config.get("eos_token_id")
            window = config.get("sliding_window")
            return cls(
                model_type=model_type,
                vocab_size=int(config["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(config["intermediate_size"]),
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=head_dim,
                rope=RopeConfig.from_hf(config, head_dim),
                norm_eps=float(config.get("rms_norm_eps", 1e-5)),
                max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                # Llama-style configs carry `use_sliding_window: false` next to an unused window.
                sliding_window=int(window) if window and config.get("use_sliding_window", True) else None,
                attention_bias=bool(config.get("attention_bias", False)),
                mlp_bias=bool(config.get("mlp_bias", False)),
                lm_head_bias=bool(config.get("lm_head_bias", False)),
                num_experts=int(config.get("num_local_experts", 0)),
                num_experts_per_token=int(config.get("num_experts_per_tok", 0)),
                router_jitter_noise=float(config.get("router_jitter_noise", 0.0)),
                bos_token_id=config.get("bos_token_id"),
                eos_token_ids=tuple(eos if isinstance(eos, list) else [] if eos is None else [eos]),
                raw=dict(config),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"config.json is missing or has a bad field: {exc}") from exc
