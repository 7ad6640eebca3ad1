"""Phi-3-vision / Phi-3.5-vision (HF remote code ``phi3_v``): a CLIP tower whose features become
rows of the Phi-3 language model's input embeddings.

One image arrives as its global 336² view plus ``h x w`` crops of its HD-resized form
(slmkit/vision/processor.py). Each view gives 24x24 CLIP patch features; 2x2 neighbours are
concatenated (12x12 of 4x the width), the crops are tiled back into one ``12h x 12w`` grid, a
learned ``sub_GN`` row separator ends every row, and the sequence is
``[crop grid] + glb_GN + [global view]`` (the released ``hd_transform_order: sub_glb``), projected by
a two-layer GELU MLP to the LM width. Weight names are the released checkpoints':
``model.vision_embed_tokens.{img_processor.vision_model.*, img_projection.0/2, glb_GN, sub_GN}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slmkit.errors import ModelLoadError
from slmkit.models.clip import CLIPVisionConfig, CLIPVisionModel
from slmkit.models.config import ModelConfig
from slmkit.models.phi3 import Phi3ForCausalLM


@dataclass(frozen=True)
class VisionConfig:
    """The image side of a ``phi3_v`` config.json."""

    tower: CLIPVisionConfig
    image_dim_out: int = 1024
    layer_idx: int = -2

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> "VisionConfig":
        processor = config.get("img_processor") or {}
        embd = config.get("embd_layer") or {}
        if not isinstance(processor, dict) or processor.get("name", "clip_vision_model") != "clip_vision_model":
            raise ModelLoadError(f"img_processor {processor!r} is not supported (only clip_vision_model)")
        released = {"hd_transform_order": "sub_glb", "projection_cls": "mlp", "use_hd_transform": True,
                    "with_learnable_separator": True}
        for key, value in released.items():
            if embd.get(key, value) != value:
                raise ModelLoadError(f"embd_layer.{key}={embd[key]!r} is not supported; the released "
                                     f"Phi-3-vision models use {value!r}")
        if processor.get("type_feature", "patch") != "patch":
            raise ModelLoadError("img_processor.type_feature must be 'patch'")
        tower = CLIPVisionConfig.from_dict(processor.get("vision_config"))
        dim = int(processor.get("image_dim_out", tower.hidden_size))
        if dim != tower.hidden_size:
            raise ModelLoadError(f"img_processor.image_dim_out={dim} differs from the tower width {tower.hidden_size}")
        if tower.patches_per_side % 2:
            raise ModelLoadError("the 2x2 merge needs an even number of patches per side")
        return cls(tower, dim, int(processor.get("layer_idx", -2)))

    @property
    def crop_size(self) -> int:
        return self.tower.image_size

    @property
    def merged_side(self) -> int:
        """Rows (and columns) of one view after the 2x2 merge: 12 for ViT-L/14-336."""
        return self.tower.patches_per_side // 2

    def num_image_tokens(self, rows: int, cols: int) -> int:
        """Rows the LM sees for an image of ``rows x cols`` crops: ``(h*w + 1)*144 + 1 + (h + 1)*12``."""
        side = self.merged_side
        return (rows * cols + 1) * side * side + 1 + (rows + 1) * side


class Phi3ImageEmbedding(nn.Module):
    """``model.vision_embed_tokens``: CLIP tower, separators, projection."""

    def __init__(self, vision: VisionConfig, hidden_size: int):
        super().__init__()
        self.vision = vision
        merged = 4 * vision.image_dim_out
        self.img_processor = CLIPVisionModel(vision.tower)
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, merged))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, merged))
        self.img_projection = nn.Sequential(nn.Linear(merged, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))

    def merge_2x2(self, features: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """``[rows*cols, P*P, C]`` view features (row-major crops) -> one ``[rows*S, cols*S, 4C]``
        grid, S = P/2, each cell holding its 2x2 patches in (row, column) order."""
        n, _, c = features.shape
        s = self.vision.merged_side
        grid = features.reshape(n, s, 2, s, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(n, s, s, 4 * c)
        return grid.reshape(rows, cols, s, s, 4 * c).permute(0, 2, 1, 3, 4).reshape(rows * s, cols * s, 4 * c)

    def with_row_separators(self, grid: torch.Tensor) -> torch.Tensor:
        """``[H, W, D]`` -> ``[H * (W + 1), D]``: ``sub_GN`` after every row."""
        h, _, d = grid.shape
        return torch.cat([grid, self.sub_GN.reshape(1, 1, d).expand(h, 1, d).to(grid.dtype)], dim=1).reshape(-1, d)

    def hd_sequence(self, pixel_values: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """``[crop grid with separators] + glb_GN + [global view with separators]``, before the
        projection: ``[num_image_tokens(rows, cols), 4 * image_dim_out]``."""
        if pixel_values.shape[0] != 1 + rows * cols:
            raise ValueError(f"{pixel_values.shape[0]} views for a {rows}x{cols} crop grid")
        features = self.img_processor.features(pixel_values.to(self.glb_GN.dtype), self.vision.layer_idx)
        crops = self.with_row_separators(self.merge_2x2(features[1:], rows, cols))
        whole = self.with_row_separators(self.merge_2x2(features[:1], 1, 1))
        return torch.cat([crops, self.glb_GN.reshape(1, -1).to(crops.dtype), whole])

    def forward(self, pixel_values: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """One image's LM input rows ``[num_image_tokens(rows, cols), hidden]`` from its views
        ``[1 + rows*cols, 3, S, S]`` (global view first, then the crops row-major)."""
        return self.img_projection(self.hd_sequence(pixel_values, rows, cols))


class Phi3VForCausalLM(Phi3ForCausalLM):
    """Phi-3 plus ``model.vision_embed_tokens``; `encode_image` gives the rows that replace the
    placeholder tokens' embeddings."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.vision = VisionConfig.from_hf(config.raw)
        self.model.vision_embed_tokens = Phi3ImageEmbedding(self.vision, config.hidden_size)

    def encode_image(self, pixel_values: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        return self.model.vision_embed_tokens(pixel_values, rows, cols)


_DROPPED_SUFFIXES = (".position_ids",)  # a buffer older transformers saved with the CLIP tower


def hf_checkpoint_state_dict(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released checkpoint in our names: the token embedding is shared with the image embedder
    as ``model.vision_embed_tokens.wte`` and some files store it only under that name."""
    out = {k: v for k, v in tensors.items() if not k.endswith(_DROPPED_SUFFIXES)}
    shared = out.pop("model.vision_embed_tokens.wte.weight", None)
    if shared is not None:
        out.setdefault("model.embed_tokens.weight", shared)
    return out
