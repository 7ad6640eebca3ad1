"""Phi-3-vision's image processor (the released ``Phi3VImageProcessor``), on Pillow and torch.

1. Transpose a portrait image to landscape (undone at the end). Find the largest scale ``s`` with
   ``s * ceil(s / ratio) <= num_crops``; resize (Pillow bilinear) to width ``336 s``, height
   ``int(336 s / ratio)``.
2. Pad the height to a multiple of 336 with white, half above (rounded down), the rest below.
3. Scale to [0, 1], normalise with CLIP's mean and std.
4. The global view is a bicubic resize of that tensor to 336²; the crops are its 336² tiles,
   row-major. Views: ``[global, crops...]``.

The reference also zero-pads the views to ``num_crops + 1`` and runs CLIP on the padding; it never
uses their features, so they are not made here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from slmkit.errors import InvalidParameterError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_NUM_CROPS = 16


@dataclass
class ProcessedImage:
    pixel_values: torch.Tensor  # [1 + rows * cols, 3, crop, crop] float32: global view, then crops
    rows: int  # crops down (padded HD height / crop)
    cols: int  # crops across
    name: str

    @property
    def hd_size(self) -> tuple[int, int]:
        """(height, width) of the padded HD image: the reference's ``image_sizes`` entry."""
        crop = self.pixel_values.shape[-1]
        return self.rows * crop, self.cols * crop


def check_num_crops(num_crops: int) -> int:
    if isinstance(num_crops, bool) or not isinstance(num_crops, int) or not 1 <= num_crops <= 64:
        raise InvalidParameterError("num_crops", f"must be an integer from 1 to 64, got {num_crops!r}")
    return num_crops


def _resized_landscape(width: int, height: int, num_crops: int, crop: int) -> tuple[int, int]:
    """(width, height) after the HD resize of a landscape (width >= height) image."""
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_width = scale * crop
    return new_width, int(new_width / ratio)


def hd_grid(width: int, height: int, num_crops: int = DEFAULT_NUM_CROPS, crop: int = 336) -> tuple[int, int]:
    """(rows, cols) of crops the HD transform gives a ``width x height`` image."""
    transposed = width < height
    if transposed:
        width, height = height, width
    new_width, new_height = _resized_landscape(width, height, num_crops, crop)
    rows, cols = math.ceil(new_height / crop), new_width // crop
    return (cols, rows) if transposed else (rows, cols)


def preprocess(image, name: str, num_crops: int = DEFAULT_NUM_CROPS, crop: int = 336) -> ProcessedImage:
    """The views of one RGB `PIL.Image` for the vision tower."""
    from PIL import Image

    check_num_crops(num_crops)
    transposed = image.width < image.height
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    new_width, new_height = _resized_landscape(image.width, image.height, num_crops, crop)
    if new_height < 1:
        raise InvalidParameterError(name, f"is {image.width}x{image.height}: too narrow a strip to "
                                    f"cut into crops (aspect ratio over {new_width}:1)")
    resized = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    padded_height = math.ceil(new_height / crop) * crop
    padded = Image.new("RGB", (new_width, padded_height), (255, 255, 255))
    padded.paste(resized, (0, (padded_height - new_height) // 2))
    if transposed:
        padded = padded.transpose(Image.Transpose.TRANSPOSE)
    pixels = torch.from_numpy(np.asarray(padded, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    pixels = (pixels - mean) / std
    height, width = pixels.shape[1:]
    rows, cols = height // crop, width // crop
    whole = F.interpolate(pixels[None], size=(crop, crop), mode="bicubic", align_corners=False)
    crops = pixels.reshape(3, rows, crop, cols, crop).permute(1, 3, 0, 2, 4).reshape(-1, 3, crop, crop)
    return ProcessedImage(torch.cat([whole, crops]), rows, cols, name)
