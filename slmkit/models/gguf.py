"""Load a GGUF into our torch models: the header becomes a HF-style config, the tensors are
dequantized (``gguf`` package) to the model dtype and renamed by the architecture's own map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from slmkit.errors import ModelLoadError
from slmkit.models.budget import check_allocation
from slmkit.models.registry import build_model, gguf_state_dict, load_weights
from slmkit.progress import progress_bar

# GGUF general.architecture -> HF model_type
ARCHITECTURES = {"llama": "llama", "phi3": "phi3", "phimoe": "phimoe"}


def _fields(reader) -> dict[str, Any]:
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml."):
            continue
        try:
            out[key] = field.contents()
        except Exception:  # noqa: BLE001 - a field we cannot decode is one we do not need
            continue
    return out


def hf_config_from_gguf(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelLoadError(f"the torch engine cannot run GGUF architecture {arch!r} "
                             f"(supported: {', '.join(ARCHITECTURES)}); use the llama.cpp engine")

    def get(key, default=None):
        return meta.get(f"{arch}.{key}", default)

    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    config: dict[str, Any] = {
        "model_type": ARCHITECTURES[arch],
        "vocab_size": int(tensors["token_embd.weight"].shape[0]),
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": int(get("attention.key_length", hidden // heads)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", get("attention.layer_norm_epsilon", 1e-5))),
        "max_position_embeddings": int(get("context_length", 4096)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in tensors,
        "partial_rotary_factor": int(get("rope.dimension_count", hidden // heads)) / int(
            get("attention.key_length", hidden // heads)),
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
    }
    window = int(get("attention.sliding_window", 0) or 0)
    if window:
        config["sliding_window"] = window
    if "rope_factors_long.weight" in tensors:
        original = int(get("rope.scaling.original_context_length", 4096))
        config["original_max_position_embeddings"] = original
        config["rope_scaling"] = {
            "rope_type": "longrope", "original_max_position_embeddings": original,
            "short_factor": tensors["rope_factors_short.weight"].tolist(),
            "long_factor": tensors["rope_factors_long.weight"].tolist(),
        }
        if get("rope.scaling.attn_factor") is not None:
            config["rope_scaling"]["attention_factor"] = float(get("rope.scaling.attn_factor"))
    elif get("rope.scaling.type") == "linear":
        config["rope_scaling"] = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    elif "rope_freqs.weight" in tensors:
        raise ModelLoadError("this GGUF stores precomputed rope frequencies (Llama 3.1 style), which the "
                             "torch engine does not read yet; use the llama.cpp engine")
    if arch == "phimoe":
        # GGUF does not store sparsemixer's epsilon; 0.01 is the released Phi-3.5-MoE's. Its rope
        # scale is stored as one computed factor, not the config's short/long mscale pair.
        config.update(num_local_experts=int(get("expert_count")), num_experts_per_tok=int(get("expert_used_count")),
                      attention_bias=True, lm_head_bias="output.bias" in tensors, router_jitter_noise=0.01)
    return config


def read_gguf(path: str | Path, *, progress: bool = True) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, HF-style config, dequantized float32 tensors) of a GGUF file."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - gguf raises plain ValueErrors/OSErrors on bad files
        raise ModelLoadError(f"cannot read {path} as GGUF: {exc}") from exc
    meta = _fields(reader)
    elements = sum(int(t.n_elements) for t in reader.tensors)
    check_allocation(elements * 4, f"dequantizing {Path(path).name} to float32")
    tensors = {}
    with progress_bar(f"dequantizing {Path(path).name}", len(reader.tensors), enabled=progress) as update:
        for i, tensor in enumerate(reader.tensors):
            value = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
            tensors[tensor.name] = value if value.flags.writeable else value.copy()
            update(i + 1)
    try:
        config = hf_config_from_gguf(meta, tensors)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelLoadError(f"{path}: the GGUF metadata lacks or garbles a hyperparameter the torch engine "
                             f"needs ({type(exc).__name__}: {exc}); use the llama.cpp engine") from exc
    return meta, config, tensors


def load_gguf_model(path: str | Path, dtype: torch.dtype, device="cpu", *, progress: bool = True,
                    quantize: str = "none"):
    """Our model with the GGUF's weights (its HF-style config stays in ``model.config.raw``)."""
    _, config, tensors = read_gguf(path, progress=progress)
    model = build_model(config, dtype, device, weight_elements=sum(t.size for t in tensors.values()), source=str(path),
                        empty=True, quantize=quantize)
    state = gguf_state_dict(model.config, tensors)
    load_weights(model, {k: torch.from_numpy(v) for k, v in state.items()}, str(path), device=device,
                 quantize=quantize)
    return model
