"""The converter registry: one `Converter` per target format (``gguf``, ``onnx``, ``openvino``;
``mlx`` slots in the same way), each saying which architectures and precisions it takes.

`slm convert` only resolves the source, asks the registry, and lets the store keep the result;
a converter writes its files into a scratch folder it is given and knows nothing of the store.
"""

from __future__ import annotations

from typing import Callable

from slmkit.convert.converter import Converter
from slmkit.errors import InvalidParameterError

_REGISTRY: dict[str, Callable[..., Converter]] = {}


def register(format_name: str, factory: Callable[..., Converter]) -> None:
    """``factory(progress=bool)`` makes the converter; a later format (openvino, mlx) registers here."""
    _REGISTRY[format_name] = factory


def formats() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_converter(format_name: str, *, progress: bool = True) -> Converter:
    _load_builtin()
    factory = _REGISTRY.get(format_name.lower())
    if factory is None:
        raise InvalidParameterError("to", f"cannot convert to {format_name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    return factory(progress=progress)


def _load_builtin() -> None:
    if _REGISTRY:
        return
    from slmkit.convert.gguf import GGUFConverter
    from slmkit.convert.mlx import MLXConverter
    from slmkit.convert.onnx import OnnxConverter
    from slmkit.convert.openvino import OpenVINOConverter

    register("gguf", GGUFConverter)
    register("onnx", OnnxConverter)
    register("mlx", MLXConverter)
    register("openvino", OpenVINOConverter)
