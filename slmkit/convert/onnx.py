"""HF folder → ONNX Runtime GenAI folder: ORT GenAI's own model builder
(``python -m onnxruntime_genai.models.builder -e cpu``), on a prepared copy of the input.

The copy links the weights and rewrites only ``config.json``: the builder's LongRoPE path reads
``rope_parameters["type"]`` and ``rope_scaling``, transformers 5 writes only ``rope_type`` in
``rope_parameters``; the copy carries both key styles so either reader finds its key. The
builder also picks its LongRoPE path whenever ``max_position_embeddings`` differs from
``original_max_position_embeddings`` (transformers 5's Phi3Config defaults the latter to 4096
for any model), so without longrope factors the copy sets them equal.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import sys
from pathlib import Path

from slmkit.backends.ortgenai import SOURCE_FACTS
from slmkit.convert.prepared import both_rope_key_styles, linked_copy, released_architecture
from slmkit.convert.process import run_converter
from slmkit.convert.converter import ConvertedModel, HFSource, ProgressFn, unsupported_architecture
from slmkit.errors import BackendUnavailableError, InvalidParameterError

_PRECISIONS = {"fp32": "fp32", "int8": "int8", "int4": "int4"}
_DISPATCH = re.compile(r'config\.architectures\[0\] == "(\w+)"')
_LAYER = re.compile(r"^Reading layer (\d+)")
# Exported by the builder, but not as something this engine can run on a CPU.
_REFUSED = {
    "PhiMoEForCausalLM": "ORT GenAI exports PhiMoE for CUDA only (its MoE operator has no CPU kernel); "
                         "convert it to GGUF instead (--to gguf)",
    "Phi3VForCausalLM": "ORT GenAI's builder exports only the text part of Phi-3-vision here (the vision "
                        "export needs scripts from the Hugging Face hub); convert it to GGUF or run it on torch",
    "WhisperForConditionalGeneration": "Whisper is a speech model, not a text generator",
}


def builder_module() -> Path:
    spec = importlib.util.find_spec("onnxruntime_genai")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError("converting to ONNX needs ONNX Runtime GenAI: pip install 'slmkit[onnx]'")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "builder.py"


def builder_architectures() -> frozenset[str]:
    """What the installed builder dispatches on (read from its source, not imported: importing it
    loads torch and onnx)."""
    return frozenset(_DISPATCH.findall(builder_module().read_text(encoding="utf-8"))) - set(_REFUSED)


def prepare_input(source: HFSource, folder: Path) -> Path:
    """A folder of links to the source's files, with a config.json carrying both rope key styles."""
    config = both_rope_key_styles(source.config)
    kind = (config.get("rope_scaling") or {}).get("type")
    if kind not in ("longrope", "su") and "original_max_position_embeddings" in config:
        config["original_max_position_embeddings"] = config.get("max_position_embeddings")
    return linked_copy(source, folder, config)


class OnnxConverter:
    format = "onnx"
    engine = "ortgenai"

    def __init__(self, *, progress: bool = True):
        self._progress = progress

    @property
    def architectures(self) -> frozenset[str]:
        return builder_architectures()

    def normalize_precision(self, precision: str) -> str:
        name = precision.lower()
        if name in ("fp16", "bf16"):
            raise InvalidParameterError("precision", f"ORT GenAI builds {name} models for GPUs only; on the CPU "
                                                     "use fp32, int8 or int4")
        if name not in _PRECISIONS:
            raise InvalidParameterError("precision", f"ONNX has no precision {precision!r}; use fp32, int8 or int4")
        return _PRECISIONS[name]

    def check(self, source: HFSource, precision: str) -> None:
        architecture = released_architecture(source.architecture)
        if architecture in _REFUSED:
            raise InvalidParameterError("src", f"{source.folder.name} ({source.architecture}): {_REFUSED[architecture]}")
        supported = self.architectures
        if architecture not in supported:
            raise unsupported_architecture(source, "ONNX (ORT GenAI builder)", supported)
        for module in ("onnx", "onnx_ir", "onnxscript", "onnxruntime", "torch", "transformers"):
            if importlib.util.find_spec(module) is None:
                raise BackendUnavailableError(f"the ONNX builder needs the Python module {module!r}: "
                                              "pip install 'slmkit[onnx]'")

    def convert(self, source: HFSource, scratch: Path, precision: str, progress: ProgressFn) -> ConvertedModel:
        prepared = prepare_input(source, scratch / "input.partial")
        output = scratch / precision
        layers = max(1, int(source.config.get("num_hidden_layers") or 1))

        def on_line(line: str) -> None:
            if match := _LAYER.search(line):
                progress("building ONNX graph", 0.9 * (int(match.group(1)) + 1) / layers)
            elif line.startswith("Saving ONNX model"):
                progress("saving ONNX model", 0.95)

        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(prepared), "-o", str(output),
               "-p", precision, "-e", "cpu", "-c", str(scratch / "cache.partial")]
        run_converter(cmd, label="ORT GenAI's model builder", extra="onnx", on_line=on_line)
        for leftover in (prepared, scratch / "cache.partial"):
            _remove_tree(leftover)
        if not (output / "genai_config.json").is_file():
            raise InvalidParameterError("src", f"ORT GenAI's builder wrote no genai_config.json for {source.folder}")
        facts = {"parameters": parameter_count(source.folder), "architecture": source.architecture,
                 "precision": precision}
        (output / SOURCE_FACTS).write_text(json.dumps(facts, indent=2))
        import onnxruntime_genai

        notes = {"converter": f"onnxruntime_genai.models.builder {onnxruntime_genai.__version__} -e cpu -p {precision}"}
        return ConvertedModel(output.name, "onnx", self.engine, precision, notes)


def parameter_count(folder: Path) -> int:
    """Parameters of a HF checkpoint, from its safetensors headers (the weights are not read)."""
    from slmkit.models.safetensors import weight_files

    total = 0
    for path in weight_files(folder):
        with path.open("rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
