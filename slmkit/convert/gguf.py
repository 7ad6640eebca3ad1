"""HF folder → GGUF: llama.cpp's own ``convert_hf_to_gguf.py`` writes f32/f16, then our quantizer
(`slmkit.store.quantize`, llama.cpp's ``llama_model_quantize``) makes q8_0, q4_k_m, … from the f32.

Quantizing from f32 (not from the script's own ``--outtype q8_0``) keeps one quantizer for every
type and gives k-quants, which the script cannot write.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

from slmkit.convert.llama_cpp_sources import converter_script, llama_cpp_version
from slmkit.convert.prepared import linked_copy, released_architecture
from slmkit.convert.process import run_converter
from slmkit.convert.converter import ConvertedModel, HFSource, ProgressFn, unsupported_architecture
from slmkit.errors import InvalidParameterError

_SHORTHANDS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "q8_0", "int4": "q4_k_m"}
_LAYER = re.compile(r"\bblk\.(\d+)\.")
_WRITING = re.compile(r"Writing:\s+(\d+)%")


def _quant_types() -> set[str]:
    from slmkit.store.quantize import QUANT_TYPES

    return set(QUANT_TYPES)


def script_architectures(script: Path) -> frozenset[str]:
    """The HF architectures the script's ``conversion`` package maps to a converter class (read,
    not imported: importing it loads torch)."""
    tree = ast.parse((script.parent / "conversion" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "TEXT_MODEL_MAP":
            return frozenset(ast.literal_eval(node.value))
    return frozenset()


class GGUFConverter:
    format = "gguf"
    engine = "llamacpp"

    def __init__(self, *, progress: bool = True):
        self._progress = progress
        self._script: Path | None = None

    @property
    def script(self) -> Path:
        if self._script is None:
            self._script = converter_script(progress=self._progress)
        return self._script

    @property
    def architectures(self) -> frozenset[str]:
        return script_architectures(self.script)

    def normalize_precision(self, precision: str) -> str:
        name = precision.lower()
        name = _SHORTHANDS.get(name, name)
        if name not in _quant_types() | {"bf16"}:
            raise InvalidParameterError(
                "precision", f"GGUF has no precision {precision!r}; use fp32, fp16, int8 (q8_0), int4 (q4_k_m) "
                             f"or a llama.cpp type: {', '.join(sorted(_quant_types()))}")
        return name

    def check(self, source: HFSource, precision: str) -> None:
        supported = self.architectures
        if released_architecture(source.architecture) not in supported:
            raise unsupported_architecture(source, "GGUF (llama.cpp)", supported)

    def convert(self, source: HFSource, scratch: Path, precision: str, progress: ProgressFn) -> ConvertedModel:
        direct = precision in ("f32", "f16", "bf16")
        base = scratch / (f"{precision}.gguf" if direct else "f32.partial.gguf")
        layers = max(1, int(source.config.get("num_hidden_layers") or 1))
        share = 1.0 if direct else 0.5  # of the bar the script's part takes

        def on_line(line: str) -> None:
            if match := _WRITING.search(line):
                progress("writing GGUF", share * (0.5 + 0.5 * int(match.group(1)) / 100))
            elif match := _LAYER.search(line):
                progress("reading weights", share * 0.5 * min(1.0, (int(match.group(1)) + 1) / layers))

        prepared = linked_copy(source, scratch / "input.partial", source.config)
        cmd = [sys.executable, str(self.script), str(prepared), "--outfile", str(base),
               "--outtype", precision if direct else "f32"]
        run_converter(cmd, label="llama.cpp's convert_hf_to_gguf.py", extra="convert", on_line=on_line,
                      cwd=self.script.parent)
        shutil.rmtree(prepared)
        notes = {"converter": f"llama.cpp convert_hf_to_gguf.py (llama-cpp-python {llama_cpp_version()})"}
        if direct:
            return ConvertedModel(base.name, "gguf", self.engine, precision, notes)
        from slmkit.store.quantize import quantize_gguf

        target = scratch / f"{precision}.gguf"
        quantize_gguf(base, target, precision,
                      on_progress=lambda done, total: progress(f"quantizing to {precision}", 0.5 + 0.5 * done / total))
        base.unlink()
        notes["quantizer"] = f"llama_model_quantize {precision} from f32"
        return ConvertedModel(target.name, "gguf", self.engine, precision, notes)
