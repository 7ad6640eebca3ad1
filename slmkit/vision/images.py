"""Turn what a user gives as an image (a path, bytes, a data URL part, a PIL image) into a decoded
RGB `PIL.Image`, refusing bad input with an error that names the image.

The pixel count is checked from the header, before any pixel is decoded, so a decompression bomb
(a small file that expands to gigapixels) costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from slmkit.errors import InvalidParameterError
from slmkit.types import ImagePart

# Formats the vision APIs take; Pillow can open more (TIFF, PSD, ...) but those are not offered.
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
MAX_PIXELS = 40_000_000  # ~ a 7300x5500 photo; the HD transform resizes to at most 16 crops anyway
MAX_IMAGES = 16  # per request: each image is 300-2700 prompt tokens on Phi-3-vision

ImageInput = Union[str, "os.PathLike[str]", bytes, ImagePart, Any]  # Any: a PIL.Image.Image


@dataclass
class LoadedImage:
    image: Any  # PIL.Image.Image, RGB, fully decoded
    name: str  # how errors refer to it: a file name, "image 2", "messages[1].content[0]"


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow is a dependency of the vision extra
        raise InvalidParameterError("image", "reading images needs Pillow: pip install 'slmkit[vision]'") from exc
    return Image


def decode_image(data: bytes, name: str, *, max_pixels: int = MAX_PIXELS):
    """Decoded RGB image from encoded bytes; `InvalidParameterError` (param ``name``) if the bytes are
    not a PNG/JPEG/GIF/WebP/BMP image, are truncated, or hold more than ``max_pixels`` pixels."""
    Image = _pil()
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.UnidentifiedImageError:
        raise InvalidParameterError(name, f"is not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image") from None
    except Image.DecompressionBombError:  # Pillow's own header check, for the very largest
        raise InvalidParameterError(name, f"claims over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; the limit "
                                    f"is {max_pixels / 1e6:.0f} (a decompression bomb, or scale it down)") from None
    except (OSError, ValueError) as exc:
        raise InvalidParameterError(name, f"cannot be read as an image ({exc})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidParameterError(name, f"has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidParameterError(name, f"is {width}x{height} = {width * height / 1e6:.0f} megapixels; the limit "
                                    f"is {max_pixels / 1e6:.0f} (scale it down first)")
    try:
        image.load()  # decode now: a truncated file fails here, not inside the model
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidParameterError(name, f"is damaged or truncated ({exc})") from None


def load_image(value: ImageInput, name: str, *, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """One image from a path, encoded bytes, an `ImagePart` (data URL), a PIL image or an image
    already loaded (kept with its name)."""
    Image = _pil()
    if isinstance(value, LoadedImage):
        return value
    if isinstance(value, Image.Image):
        width, height = value.size
        if width * height > max_pixels:
            raise InvalidParameterError(name, f"is {width}x{height}; the limit is {max_pixels / 1e6:.0f} megapixels")
        return LoadedImage(value.convert("RGB"), name)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return LoadedImage(decode_image(bytes(value), name, max_pixels=max_pixels), name)
    if isinstance(value, ImagePart):
        if not value.is_data_url:
            raise InvalidParameterError(name, f"is a URL ({value.url[:60]}); slmkit runs offline and does not "
                                        "fetch images: send the image itself as a data: URL (base64)")
        return LoadedImage(decode_image(decode_base64(value.base64_data or "", name), name,
                                        max_pixels=max_pixels), name)
    if isinstance(value, (str, os.PathLike)):
        path = Path(value).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidParameterError(name, f"cannot read {path}: {exc.strerror or exc}") from None
        return LoadedImage(decode_image(data, str(path), max_pixels=max_pixels), str(path))
    raise InvalidParameterError(name, f"must be a file path, bytes, a data: URL part or a PIL image, "
                                f"got {type(value).__name__}")


def decode_base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameterError(name, "is not valid base64") from None
