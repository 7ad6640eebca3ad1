"""HF folder → MLX folder: mlx-lm's own converter (``python -m mlx_lm convert``), on a prepared copy
of the input, in a child process.

mlx-lm reads rope settings from ``rope_scaling`` (``type``) only; transformers 5 writes them as
``rope_parameters`` (``rope_type``), which mlx-lm's phi3 silently ignores (plain RoPE) and its
phimoe crashes on (mlx-lm #1884). The copy carries both key styles (`mlx_model_config`), and so
does the config.json mlx-lm writes, so transformers and mlx-lm read the output alike.

Precisions: fp32 / fp16 cast every weight; int8 / int4 are mlx-lm's affine quantization (groups
of 64, every linear layer and the embedding whose width 64 divides; norms stay fp32). The source's tokenizer files are
copied over the ones mlx-lm re-saves, so every engine tokenizes the converted model as the source.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

from slmkit.backends.mlx import mlx_lm_model_types, mlx_model_config
from slmkit.convert.prepared import linked_copy
from slmkit.convert.process import run_converter
from slmkit.convert.converter import ConvertedModel, HFSource, ProgressFn
from slmkit.errors import BackendUnavailableError, InvalidParameterError

# precision -> mlx-lm convert flags
_FLAGS = {
    "fp32": ["--dtype", "float32"],
    "fp16": ["--dtype", "float16"],
    "int8": ["--dtype", "float32", "-q", "--q-bits", "8", "--q-group-size", "64"],
    "int4": ["--dtype", "float32", "-q", "--q-bits", "4", "--q-group-size", "64"],
}
_STEPS = {"[INFO] Loading": ("loading the checkpoint", 0.2), "[INFO] Using dtype": ("casting", 0.4),
          "[INFO] Quantizing": ("quantizing", 0.6)}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json", "added_tokens.json")


class MLXConverter:
    format = "mlx"
    engine = "mlx"

    def __init__(self, *, progress: bool = True):
        self._progress = progress

    @property
    def architectures(self) -> frozenset[str]:
        return mlx_lm_model_types()  # mlx-lm dispatches on model_type, not on the class name

    def normalize_precision(self, precision: str) -> str:
        name = precision.lower()
        if name not in _FLAGS:
            raise InvalidParameterError("precision", f"MLX has no precision {precision!r}; use fp32, fp16, int8 or int4")
        return name

    def check(self, source: HFSource, precision: str) -> None:
        for module in ("mlx", "mlx_lm"):
            if importlib.util.find_spec(module) is None:
                raise BackendUnavailableError(f"converting to MLX needs the Python module {module!r}: "
                                              "pip install 'slmkit[mlx]'")
        model_type = source.model_type
        if model_type == "phi3_v":
            raise InvalidParameterError("src", f"{source.folder.name} is Phi-3-vision; mlx-lm has no vision "
                                               "models (that is mlx-vlm); run it on torch or convert it to GGUF")
        if model_type not in self.architectures:
            raise InvalidParameterError("src", f"{source.folder.name} is a {source.architecture} (model_type "
                                               f"{model_type!r}), which mlx-lm has no model for")

    def convert(self, source: HFSource, scratch: Path, precision: str, progress: ProgressFn) -> ConvertedModel:
        prepared = linked_copy(source, scratch / "input.partial", mlx_model_config(source.config))
        output = scratch / precision

        def on_line(line: str) -> None:
            for prefix, (what, done) in _STEPS.items():
                if line.startswith(prefix):
                    progress(what, done)

        cmd = [sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(prepared), "--mlx-path", str(output),
               *_FLAGS[precision]]
        run_converter(cmd, label="mlx-lm's converter", extra="mlx", on_line=on_line)
        shutil.rmtree(prepared)
        if not (output / "config.json").is_file() or not list(output.glob("model*.safetensors")):
            raise InvalidParameterError("src", f"mlx-lm's converter wrote no weights for {source.folder}")
        progress("copying the tokenizer", 0.95)
        for name in TOKENIZER_FILES:
            if (source.folder / name).is_file():
                shutil.copyfile(source.folder / name, output / name)
        notes = {"converter": f"mlx_lm convert {version('mlx-lm')} {' '.join(_FLAGS[precision])}"}
        return ConvertedModel(output.name, "mlx", self.engine, precision, notes)
