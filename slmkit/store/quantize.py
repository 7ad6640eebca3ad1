"""Requantize a GGUF with llama.cpp's own quantizer (``llama_model_quantize``).

The shipped SmolLM2 is Q4_1, which has no fast CPU kernel; Q8_0 of the same weights measured
2x faster prefill here with the same greedy answers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import llama_cpp

from slmkit.backends.llama_log import init_llama, listen, recent_errors
from slmkit.backends.llamacpp import default_threads
from slmkit.errors import InvalidParameterError, ModelLoadError

QUANT_TYPES = {
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q6_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "q5_k_s": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_S,
    "q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0,
    "q5_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1,
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "q4_k_s": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
    "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
    "q3_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "q2_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
    "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "f32": llama_cpp.LLAMA_FTYPE_ALL_F32,  # exact dequantization (a reference for other engines)
}

# llama.cpp logs "[  12/ 272]   blk.0.attn_k.weight - ..." once per tensor.
_TENSOR_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")


def quantize_gguf(
    source: Path,
    target: Path,
    quant_type: str,
    *,
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``target`` as ``source`` requantized to ``quant_type``; reports (done, total) tensors."""
    quant_type = quant_type.lower()
    if quant_type not in QUANT_TYPES:
        raise InvalidParameterError(
            "to", f"unknown quantization {quant_type!r}; choose one of {', '.join(QUANT_TYPES)}"
        )
    init_llama()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[quant_type]
    params.nthread = threads or default_threads()
    params.allow_requantize = True  # the source is usually quantized already
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")

    def listener(line: str) -> None:
        match = _TENSOR_LINE.search(line)
        if match and on_progress:
            on_progress(int(match.group(1)), int(match.group(2)))

    with listen(listener):
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
    if rc != 0:
        partial.unlink(missing_ok=True)
        raise ModelLoadError(f"quantizing {source} to {quant_type} failed ({recent_errors() or rc})")
    partial.replace(target)
    return target
