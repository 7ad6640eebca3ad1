"""From a HF ``config.json`` (``model_type`` / ``architectures``) to our model class."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch

from slmkit.errors import ModelLoadError
from slmkit.models.budget import check_allocation, check_matches_weights
from slmkit.models.config import ModelConfig
from slmkit.models.llama import CausalLM, LlamaForCausalLM

# model_type -> (our registry key, class). Mistral and Qwen2-style configs that are plain Llama
# decoders are left out until a test covers them.
ARCHITECTURES: dict[str, type[CausalLM]] = {
    "llama": LlamaForCausalLM,
}


def _register_optional() -> None:
    try:
        from slmkit.models.phi3 import Phi3ForCausalLM
        ARCHITECTURES.setdefault("phi3", Phi3ForCausalLM)
    except ImportError:
        pass
    try:
        from slmkit.models.phi3_vision import Phi3VForCausalLM
        ARCHITECTURES.setdefault("phi3_v", Phi3VForCausalLM)
    except ImportError:
        pass
    try:
        from slmkit.models.phimoe import PhiMoEForCausalLM
        ARCHITECTURES.setdefault("phimoe", PhiMoEForCausalLM)
    except ImportError:
        pass


_register_optional()


def model_type_of(config: dict[str, Any]) -> str:
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        arch = (config.get("architectures") or ["?"])[0]
        raise ModelLoadError(
            f"the torch engine does not implement {model_type or arch!r} "
            f"(supported: {', '.join(sorted(ARCHITECTURES))}); run it as a GGUF on the llama.cpp engine")
    return model_type


def gguf_state_dict(config: ModelConfig, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Dequantized llama.cpp tensors renamed (and reshaped) into our parameters."""
    module = importlib.import_module(ARCHITECTURES[config.model_type].__module__)
    return module.gguf_state_dict(config, tensors)


def checkpoint_state_dict(config: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A HF checkpoint's tensors in our names: architectures whose released checkpoints use an
    older layout (PhiMoE's per-expert w1/w2/w3) convert them; others load as they are."""
    module = importlib.import_module(ARCHITECTURES[config.model_type].__module__)
    convert = getattr(module, "hf_checkpoint_state_dict", None)
    return convert(config, state) if convert else state


def build_model(config: dict[str, Any], dtype: torch.dtype, device: str | torch.device = "cpu", *,
                weight_elements: int | None = None, source: str = "the model") -> CausalLM:
    """An uninitialised-weights model of the right class (weights are loaded afterwards).

    Refused before anything is allocated when the config implies more parameters than
    ``weight_elements`` (the tensors on disk) or more bytes than the device has free."""
    model_type = model_type_of(config)
    try:
        parsed = ModelConfig.from_hf(config, model_type)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{source}: {exc.message}") from exc
    parameters = parsed.parameter_count()
    if weight_elements is not None:
        check_matches_weights(parameters, weight_elements, source)
    check_allocation(parameters * dtype.itemsize, f"{source} ({parameters:,} parameters in {dtype})", str(device))
    with torch.device(device):
        model = ARCHITECTURES[model_type](parsed)
    return model.to(dtype)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy weights in, converting dtype; any missing or unexpected tensor is a load error."""
    expected = {k for k in model.state_dict() if "rotary_emb" not in k}
    if model.config.tie_word_embeddings:
        expected.discard("lm_head.weight")
        state.pop("lm_head.weight", None)
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(f"{source}: weights do not match the {model.config.model_type} architecture "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    with torch.no_grad():
        for name, value in state.items():
            target = params[name]
            if tuple(target.shape) != tuple(value.shape):
                raise ModelLoadError(f"{source}: {name} has shape {tuple(value.shape)}, "
                                     f"the config says {tuple(target.shape)}")
            target.copy_(value.to(target.dtype))
