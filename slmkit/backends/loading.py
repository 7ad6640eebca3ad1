"""Pick the engine for a model file or folder and load it.

``auto``: llama.cpp for a GGUF file, torch for a Hugging Face folder. ``torch`` also runs a GGUF
(dequantized into our own model); llama.cpp cannot read a HF folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slmkit.errors import InvalidParameterError

BACKENDS = ("auto", "llamacpp", "torch")


@dataclass
class BackendOptions:
    backend: str = "auto"
    dtype: str = "auto"  # torch only: auto, float32, bfloat16, float16
    device: str = "auto"  # torch only: auto, cpu, cuda, cuda:1

    def resolve(self, path: Path) -> str:
        if self.backend not in BACKENDS:
            raise InvalidParameterError("backend", f"{self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.backend == "auto":
            return "torch" if path.is_dir() else "llamacpp"
        if self.backend == "llamacpp" and path.is_dir():
            raise InvalidParameterError(
                "backend", f"{path} is a Hugging Face folder; llama.cpp reads GGUF files only — "
                "use the torch engine (--backend torch)")
        return self.backend


def load_model(path: str | Path, options: BackendOptions | None = None, *, progress: bool = False):
    """A `LlamaCppModel` or a `TorchModel`: both have ``info``, ``tokenizer``, ``create_runner``."""
    path = Path(path)
    options = options or BackendOptions()
    if options.resolve(path) == "torch":
        from slmkit.backends.torch_native import TorchModel

        return TorchModel(path, dtype=options.dtype, device=options.device, progress=progress)
    from slmkit.backends.llamacpp import LlamaCppModel

    return LlamaCppModel(path)
