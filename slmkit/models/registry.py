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
from slmkit.models.rope import RotaryEmbedding

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
                weight_elements: int | None = None, source: str = "the model", empty: bool = False,
                quantize: str = "none") -> CausalLM:
    """A model of the right class with random weights, or with none (``empty``: on the meta
    device, so nothing is allocated until `load_weights` puts the checkpoint's tensors in).

    Refused before anything is allocated when the config implies more parameters than
    ``weight_elements`` (the tensors on disk) or more bytes than the device has free (int8
    weights, ``quantize="int8"``, count one byte each)."""
    model_type = model_type_of(config)
    try:
        parsed = ModelConfig.from_hf(config, model_type)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{source}: {exc.message}") from exc
    parameters = parsed.parameter_count()
    if weight_elements is not None:
        check_matches_weights(parameters, weight_elements, source)
    itemsize = 1 if quantize == "int8" else dtype.itemsize
    check_allocation(parameters * itemsize, f"{source} ({parameters:,} parameters in {dtype})", str(device))
    with torch.device("meta" if empty else device):
        model = ARCHITECTURES[model_type](parsed)
    return model.to(dtype)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, *,
                 device: str | torch.device = "cpu", quantize: str = "none") -> None:
    """Put the weights in, converting dtype; any missing or unexpected tensor is a load error.

    Tensors are taken out of ``state`` one by one, and with ``quantize="int8"`` each linear layer
    becomes int8 as soon as its weights are in: the float model never exists whole, so loading
    peaks near the checkpoint's size rather than checkpoint plus float model."""
    expected = {k for k in model.state_dict() if "rotary_emb" not in k}
    if model.config.tie_word_embeddings:
        expected.discard("lm_head.weight")
        state.pop("lm_head.weight", None)
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(f"{source}: weights do not match the {model.config.model_type} architecture "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    from slmkit.models.quantize import KERNEL_MULTIPLE, quantize_linear_in

    modules = dict(model.named_modules())
    parents = {f"{prefix}.{name}" if prefix else name: (module, name)
               for prefix, module in model.named_modules() for name, _ in module.named_children()}
    tied_head = model.lm_head if model.config.tie_word_embeddings else None  # stays float: lookups need it
    with torch.no_grad():
        for name in sorted(state):  # a layer's "bias" sorts before its "weight": complete when the weight is in
            value = state.pop(name)
            owner_name, _, attr = name.rpartition(".")
            owner = modules[owner_name]
            target = getattr(owner, attr)
            if tuple(target.shape) != tuple(value.shape):
                raise ModelLoadError(f"{source}: {name} has shape {tuple(value.shape)}, "
                                     f"the config says {tuple(target.shape)}")
            tensor = value.to(device=device, dtype=target.dtype)
            if attr in owner._parameters:
                owner._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=False)
            else:
                owner._buffers[attr] = tensor
            if (quantize == "int8" and isinstance(owner, torch.nn.Linear) and owner is not tied_head
                    and owner.in_features % KERNEL_MULTIPLE == 0 and not any(p.is_meta for p in owner.parameters())):
                parent, child = parents[owner_name]
                quantize_linear_in(parent, child, target.dtype)
                modules[owner_name] = getattr(parent, child)
    if model.config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.materialize(device)

