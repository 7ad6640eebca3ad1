"""The CLIP vision tower (HF ``CLIPVisionModel``) as Phi-3-vision uses it.

Parameter names are transformers' (``vision_model.embeddings.*``, ``vision_model.encoder.layers.N.*``,
``pre_layrnorm`` with its historical spelling), so the tower inside a Phi-3-vision checkpoint loads
as it is. Phi-3-vision reads the hidden state after the penultimate layer and drops the class
token; `features` runs only the layers that state needs. The last layer and ``post_layernorm``
are still built: they are in every released checkpoint, and `hidden_states` (the parity check)
returns them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slmkit.errors import ModelLoadError


@dataclass(frozen=True)
class CLIPVisionConfig:
    """CLIPVisionConfig's fields under their HF names; the defaults are ViT-L/14 at 336 px, the tower
    every released Phi-3(.5)-vision uses (its config.json does not say so: the reference code
    hard-codes it)."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 336
    patch_size: int = 14
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "CLIPVisionConfig":
        values = values or {}
        known = cls.__dataclass_fields__
        try:
            config = cls(**{k: type(getattr(cls, k))(v) for k, v in values.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"img_processor.vision_config has a bad field: {exc}") from exc
        if config.hidden_act not in _ACTIVATIONS:
            raise ModelLoadError(f"img_processor.vision_config.hidden_act {config.hidden_act!r} is not one of "
                                 f"{', '.join(_ACTIVATIONS)}")
        if config.image_size % config.patch_size or config.hidden_size % config.num_attention_heads:
            raise ModelLoadError("img_processor.vision_config: image_size must be a multiple of patch_size and "
                                 "hidden_size a multiple of num_attention_heads")
        return config

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}


class CLIPEmbeddings(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=config.patch_size,
                                         stride=config.patch_size, bias=False)
        self.position_embedding = nn.Embedding(config.patches_per_side ** 2 + 1, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class CLIPAttention(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        dim = config.hidden_size
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)  # no mask: every patch sees every patch
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class CLIPMLP(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.act = _ACTIVATIONS[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.self_attn = CLIPAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers))


class CLIPVisionTransformer(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.embeddings = CLIPEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class CLIPVisionModel(nn.Module):
    """``vision_model.*`` of HF's CLIPVisionModel."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.vision_model = CLIPVisionTransformer(config)

    def hidden_states(self, pixel_values: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """transformers' ``output_hidden_states``: the embeddings (after ``pre_layrnorm``), then the
        output of each layer, ``[B, 1 + patches, hidden]`` each; ``upto`` stops after that many layers."""
        vm = self.vision_model
        x = vm.pre_layrnorm(vm.embeddings(pixel_values))
        states = [x]
        for layer in vm.encoder.layers[:upto]:
            x = layer(x)
            states.append(x)
        return states

    def features(self, pixel_values: torch.Tensor, layer_idx: int = -2) -> torch.Tensor:
        """Patch features ``[B, patches, hidden]`` of hidden state ``layer_idx`` (class token dropped)."""
        count = len(self.vision_model.encoder.layers) + 1
        index = layer_idx % count
        return self.hidden_states(pixel_values, upto=index)[index][:, 1:]
