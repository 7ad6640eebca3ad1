"""What a converter is: the `Converter` protocol, the `HFSource` it reads and the `ConvertedModel`
it writes. Its own module, importing no converter, so the converters, the registry that lists them
and the engines' helpers (convert/prepared.py) all import it without a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from slmkit.errors import InvalidParameterError

# Names every format understands; a format may take its own names too (llama.cpp's ``q4_k_m``).
PRECISIONS = ("fp32", "fp16", "int8", "int4")

ProgressFn = Callable[[str, float], None]  # (what is happening, fraction done 0..1)


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face checkpoint folder to convert, with what its config.json says."""

    folder: Path
    config: dict
    architecture: str  # config["architectures"][0], e.g. Phi3ForCausalLM
    model_type: str  # config["model_type"], e.g. phi3


@dataclass(frozen=True)
class ConvertedModel:
    """What a converter wrote into its scratch folder."""

    variant: str  # file or folder name inside the scratch folder that the manifest points at
    format: str  # manifest format: gguf | onnx | openvino
    engine: str  # the backend that runs it: llamacpp | ortgenai | openvino
    precision: str  # as written, e.g. q4_k_m, int4
    notes: dict


class Converter(Protocol):
    format: str
    engine: str  # backend name that runs the output
    architectures: frozenset[str]  # HF `architectures[0]` values it can convert

    def normalize_precision(self, precision: str) -> str:
        """The precision's name in this format (``int4`` → ``q4_k_m``); raises for one it lacks."""
        ...

    def check(self, source: HFSource, precision: str) -> None:
        """Raise a clear error for an input it cannot convert, before any work starts."""
        ...

    def convert(self, source: HFSource, scratch: Path, precision: str, progress: ProgressFn) -> ConvertedModel:
        ...


def unsupported_architecture(source: HFSource, format_name: str, supported: frozenset[str]) -> InvalidParameterError:
    known = [a for a in ("LlamaForCausalLM", "Phi3ForCausalLM", "PhiMoEForCausalLM", "MistralForCausalLM",
                         "Qwen2ForCausalLM", "GemmaForCausalLM") if a in supported]
    return InvalidParameterError(
        "src", f"{source.folder.name} is a {source.architecture}, which the {format_name} converter cannot "
               f"handle; it converts {len(supported)} architectures, among them {', '.join(known)}")
