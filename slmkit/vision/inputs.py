"""From a prompt with ``<|image_N|>`` tags and the images to token ids plus the image rows that
replace the placeholder tokens' embeddings: the `EncodedPrompt` a vision model's `Generator` or
engine request takes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

from slmkit.backends.base import EmbeddingSpan
from slmkit.errors import InvalidParameterError
from slmkit.text.prompt import EncodedPrompt
from slmkit.vision.images import MAX_IMAGES, ImageInput, load_image
from slmkit.vision.processor import DEFAULT_NUM_CROPS, check_num_crops, preprocess
from slmkit.vision.prompt import image_token_ids


def read_num_crops(folder: Path) -> int:
    """``num_crops`` of the folder's ``preprocessor_config.json`` (the released processor's
    default, 16, without one)."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return DEFAULT_NUM_CROPS
    try:
        return check_num_crops(int(json.loads(path.read_text(encoding="utf-8")).get("num_crops", DEFAULT_NUM_CROPS)))
    except (ValueError, TypeError, InvalidParameterError):
        return DEFAULT_NUM_CROPS


class VisionEncoder:
    """A vision model's image side: decode and check each image, cut it into views, run the tower."""

    def __init__(self, model, encode: Callable[[str], list[int]], *, placeholder_id: int, num_crops: int,
                 max_images: int = MAX_IMAGES):
        self.model = model  # has .vision (VisionConfig) and .encode_image(pixels, rows, cols)
        self.encode = encode
        self.placeholder_id = placeholder_id
        self.num_crops = num_crops
        self.max_images = max_images

    def build(self, text: str, images: Sequence[ImageInput], *, names: Sequence[str] | None = None,
              num_crops: int | None = None) -> EncodedPrompt:
        """Token ids of ``text`` with each image's rows at its tag; errors name the image."""
        import torch

        started = time.perf_counter()
        if len(images) > self.max_images:
            raise InvalidParameterError("images", f"{len(images)} images in one request; the limit is "
                                        f"{self.max_images}")
        crops = check_num_crops(num_crops if num_crops is not None else self.num_crops)
        names = list(names) if names is not None else [f"images[{i}]" for i in range(len(images))]
        processed = [preprocess(load_image(image, name).image, name, crops, self.model.vision.crop_size)
                     for image, name in zip(images, names)]
        lengths = [self.model.vision.num_image_tokens(p.rows, p.cols) for p in processed]
        ids, slots = image_token_ids(text, lengths, self.encode, self.placeholder_id)
        spans = []
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for slot in slots:
                image = processed[slot.index]
                rows = self.model.encode_image(image.pixel_values.to(device), image.rows, image.cols)
                spans.append(EmbeddingSpan(slot.start, rows))
        return EncodedPrompt(ids, spans, sum(lengths), time.perf_counter() - started)
