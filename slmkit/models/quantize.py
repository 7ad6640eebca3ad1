"""Weight-only int8 for the torch engine: every `nn.Linear` becomes an `Int8Linear` holding
per-output-channel symmetric int8 weights (scale = max |w| / 127 per row) and running on torch's
fused CPU kernel ``aten._weight_int8pack_mm`` (int8 weights, activations in the model dtype).
The kernel needs the input width to be a multiple of 32 (it returns garbage for 40 and crashes for
33 in torch 2.13): narrower or odd layers stay float (none in the Phi family).

Measured on this project's AVX-512 CPU: the kernel is fast with bfloat16 activations and slow with
float32 ones (a 300-row prefill of an 8192x3072 layer: 0.2 s against 11 s), so an int8 model
computes in bfloat16 unless float32 is asked for explicitly. For many rows (a prefill) it is still
slower than bf16 GEMM (400 rows of a 3072x8192 layer: 195 ms against 70 ms), so above
``GEMM_ROWS`` rows the layer dequantizes its weight to bf16 for that one call and uses GEMM; one
token per sequence (decoding, where reading the weights is the cost) stays on the int8 kernel.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL_MULTIPLE = 32  # in_features the int8 kernel handles correctly
GEMM_ROWS = 32  # above this many rows, dequantize and use the dense GEMM


class Int8Linear(nn.Module):
    """``y = x @ (q * scale).T + b`` with ``q`` int8 ``[out, in]`` and ``scale`` ``[out]``."""

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype) -> "Int8Linear":
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        return cls(quantized, scales.to(dtype), bias)

    def dequantized(self) -> torch.Tensor:
        return self.weight.float() * self.scales.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features).to(self.scales.dtype).contiguous()
        if rows.shape[0] > GEMM_ROWS:
            out = rows @ (self.weight.to(rows.dtype) * self.scales[:, None]).T
        else:
            out = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_linear_in(parent: nn.Module, name: str, dtype: torch.dtype) -> None:
    """Replace the `nn.Linear` child ``name`` of ``parent`` by its `Int8Linear` (frees the float weight)."""
    setattr(parent, name, Int8Linear.from_linear(getattr(parent, name), dtype))


def quantize_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Every `nn.Linear` of ``model`` to int8, in place; a tied LM head stays tied to the (float)
    embedding table, which lookups need."""
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.Linear) and child.in_features % KERNEL_MULTIPLE == 0
                    and not (tied and child is getattr(model, "lm_head", None))):
                quantize_linear_in(parent, name, dtype)
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (int8 weights count one byte each)."""
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total
