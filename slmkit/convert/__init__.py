"""Format conversion for `slm convert`: a registry of converters (GGUF via llama.cpp, ONNX via
ORT GenAI's builder) that turn a Hugging Face folder into files another engine runs."""

from slmkit.convert.converter import PRECISIONS, ConvertedModel, Converter, HFSource
from slmkit.convert.registry import formats, get_converter, register

__all__ = ["PRECISIONS", "ConvertedModel", "Converter", "HFSource", "formats", "get_converter", "register"]
