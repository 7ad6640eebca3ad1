"""Frames of a video for a vision model: N frames sampled evenly with PyAV (FFmpeg), so GIF, MP4,
WebM and whatever else FFmpeg decodes."""

from __future__ import annotations

from pathlib import Path

from slmkit.errors import InvalidParameterError
from slmkit.vision.images import MAX_IMAGES, MAX_PIXELS, LoadedImage

MAX_FRAMES = MAX_IMAGES


def evenly_spaced(total: int, count: int) -> list[int]:
    """``count`` frame indices spread over ``0 .. total-1``, first and last included."""
    if count >= total:
        return list(range(total))
    if count == 1:
        return [total // 2]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def sample_frames(path: str | Path, count: int, *, max_pixels: int = MAX_PIXELS) -> list[LoadedImage]:
    """``count`` frames of the video at ``path``, in order, as RGB images named ``"<path> frame <i>"``."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_FRAMES:
        raise InvalidParameterError("frames", f"must be an integer from 1 to {MAX_FRAMES}, got {count!r}")
    try:
        import av
    except ImportError as exc:  # pragma: no cover - PyAV is in the vision extra
        raise InvalidParameterError("video", "reading videos needs PyAV: pip install 'slmkit[vision]'") from exc
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidParameterError("video", f"{path} does not exist")

    def frames():
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InvalidParameterError("video", f"{path} has no video stream")
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height > max_pixels:
                raise InvalidParameterError("video", f"{path}: frames of {stream.codec_context.width}x"
                                            f"{stream.codec_context.height} are over the {max_pixels / 1e6:.0f} "
                                            "megapixel limit")
            yield from container.decode(stream)

    try:
        total = sum(1 for _ in frames())  # containers often do not say how many frames they hold
        if total == 0:
            raise InvalidParameterError("video", f"{path} holds no frames")
        wanted = evenly_spaced(total, count)
        chosen, picks = [], set(wanted)
        for index, frame in enumerate(frames()):
            if index in picks:
                chosen.append(LoadedImage(frame.to_image().convert("RGB"), f"{path} frame {index}"))
            if index >= wanted[-1]:
                break
        return chosen
    except av.error.FFmpegError as exc:
        raise InvalidParameterError("video", f"{path} cannot be decoded as a video ({exc})") from None
