"""Test media for the vision tests: images, a GIF and an MP4 made here, and bad files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from tests.vision_fixtures import gradient_image, png_bytes


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` with almost no data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def write_media(folder: Path) -> dict[str, Path]:
    """photo.png (640x480), chart.jpg (300x900), clip.gif (5 frames), clip.mp4 (6 frames), and bad
    files: notes.png (text), cut.png (truncated), bomb.png (100000 x 100000 header), scan.tiff."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("photo.png", "chart.jpg", "clip.gif", "clip.mp4", "notes.png",
                                              "cut.png", "bomb.png", "scan.tiff")}
    paths["photo.png"].write_bytes(png_bytes(gradient_image(640, 480, seed=1)))
    gradient_image(300, 900, seed=2).save(paths["chart.jpg"], format="JPEG", quality=95)
    frames = [gradient_image(160, 120, seed=s) for s in range(5)]
    frames[0].save(paths["clip.gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    write_mp4(paths["clip.mp4"], [gradient_image(160, 128, seed=s) for s in range(6)])
    paths["notes.png"].write_text("not an image at all")
    paths["cut.png"].write_bytes(png_bytes(gradient_image(200, 200, seed=3))[:700])
    paths["bomb.png"].write_bytes(png_header_only(100_000, 100_000))
    buffer = io.BytesIO()
    gradient_image(32, 32).save(buffer, format="TIFF")
    paths["scan.tiff"].write_bytes(buffer.getvalue())
    return paths


def write_mp4(path: Path, images) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height = images[0].size
        stream.pix_fmt = "yuv420p"
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
