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
        """Read a HF config; a missing, non-integer, non-positive or inconsistent size is a
        `ModelLoadError` naming the field (config.json comes with downloaded files)."""
        try:
            heads = _size(config, "num_attention_heads")
            hidden = _size(config, "hidden_size")
            head_dim = _size(config, "head_dim") if config.get("head_dim") else hidden // heads
            eos = config.get("eos_token_id")
            window = config.get("sliding_window")
            parsed = cls(
                model_type=model_type,
                vocab_size=_size(config, "vocab_size"),
                hidden_size=hidden,
                intermediate_size=_size(config, "intermediate_size"),
                num_layers=_size(config, "num_hidden_layers"),
                num_heads=heads,
                num_kv_heads=_size(config, "num_key_value_heads") if config.get("num_key_value_heads") else heads,
                head_dim=head_dim,
                rope=RopeConfig.from_hf(config, head_dim),
                norm_eps=float(config.get("rms_norm_eps", 1e-5)),
                max_position_embeddings=_size(config, "max_position_embeddings", 4096),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                # Llama-style configs carry `use_sliding_window: false` next to an unused window.
                sliding_window=_size(config, "sliding_window") if window and config.get("use_sliding_window", True)
                else None,
                attention_bias=bool(config.get("attention_bias", False)),
                mlp_bias=bool(config.get("mlp_bias", False)),
                lm_head_bias=bool(config.get("lm_head_bias", False)),
                num_experts=_size(config, "num_local_experts", 0, minimum=0),
                num_experts_per_token=_size(config, "num_experts_per_tok", 0, minimum=0),
                router_jitter_noise=float(config.get("router_jitter_noise", 0.0)),
                bos_token_id=config.get("bos_token_id"),
                eos_token_ids=tuple(eos if isinstance(eos, list) else [] if eos is None else [eos]),
                raw=dict(config),
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise ModelLoadError(f"config.json is missing or has a bad field: {exc}") from exc
        parsed._check_shape()
        return parsed

    def _check_shape(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ModelLoadError(f"config.json: num_attention_heads ({self.num_heads}) is not a multiple of "
                                 f"num_key_value_heads ({self.num_kv_heads})")
        if self.num_experts_per_token > self.num_experts:
            raise ModelLoadError(f"config.json: num_experts_per_tok ({self.num_experts_per_token}) is more than "
                                 f"num_local_experts ({self.num_experts})")
        if self.rope.dim > self.head_dim or self.rope.dim % 2:
            raise ModelLoadError(f"config.json: the rotary dimension ({self.rope.dim}) must be even and at most "
                                 f"head_dim ({self.head_dim})")

    def parameter_count(self) -> int:
        """The weights this shape holds (biases and norms aside: a lower bound, to compare with
        the tensors on disk before allocating anything)."""
        hidden, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attention = hidden * q * 2 + hidden * kv * 2
        mlp = 3 * hidden * self.intermediate_size
        if self.num_experts:
            mlp = mlp * self.num_experts + hidden * self.num_experts
        embeddings = self.vocab_size * hidden * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_layers * (attention + mlp)


def _size(config: dict[str, Any], key: str, default: int | None = None, *, minimum: int = 1) -> int:
    """A size field: an integer (JSON ``64``, not ``64.5``, ``"64"`` or ``true``) of at least `minimum`."""
    value = config.get(key, default)
    if value is None:
        raise ModelLoadError(f"config.json has no {key}; the file is incomplete")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelLoadError(f"config.json: {key} must be an integer of at least {minimum} (it is {value!r}); "
                             "the file is corrupted or not a model config")
    return value
