"""The native PyTorch engine: our own models (slmkit/models/) from HF folders or GGUF files.

`TorchModel` offers what `LlamaCppModel` offers (``info``, ``tokenizer``, ``create_runner``), so
`LLM`, the batching engine and the server run either unchanged. A GGUF keeps llama.cpp's
tokenizer (vocab-only load, so grammar constraints work too); a HF folder uses its
``tokenizer.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

from slmkit.backends.base import check_runner_options
from slmkit.backends.llamacpp import ModelInfo
from slmkit.errors import InvalidParameterError, ModelLoadError

DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATIONS = ("none", "int8")  # weight-only; slmkit.models.quantize (imported with torch, so named here)


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidParameterError("device", "CUDA was asked for but torch sees no GPU; use --device cpu")
    return device


def pick_dtype(dtype: str, device: str, quantize: str = "none"):
    import torch

    if dtype not in DTYPES:
        raise InvalidParameterError("dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
    if quantize not in QUANTIZATIONS:
        raise InvalidParameterError("quantize", f"{quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    if dtype == "auto":
        # bf16 matmuls are slow on CPUs without AMX, so fp32 is the safe default there; but the int8
        # kernel is fast with bf16 activations only (slmkit/models/quantize.py)
        return torch.bfloat16 if device.startswith("cuda") or quantize == "int8" else torch.float32
    return getattr(torch, dtype)


def count_parameters(model) -> int:
    """Weights of the model, an int8 layer's counted as its float original's."""
    from slmkit.models.quantize import Int8Linear

    total = sum(p.numel() for p in model.parameters())
    return total + sum(m.weight.numel() for m in model.modules() if isinstance(m, Int8Linear))


class TorchModel:
    def __init__(self, path: str | Path, *, dtype: str = "auto", device: str = "auto", quantize: str = "none",
                 progress: bool = False):
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise ModelLoadError("the torch engine needs PyTorch: pip install 'slmkit[torch]'") from exc
        self.path = Path(path)
        self.device = pick_device(device)
        torch_dtype = pick_dtype(dtype, self.device, quantize)
        self.quantize = quantize
        started = time.perf_counter()
        if self.path.is_dir():
            self.model, template = self._load_folder(torch_dtype, progress)
        elif self.path.is_file():
            self.model, template = self._load_gguf(torch_dtype, progress)
        else:
            raise ModelLoadError(f"model not found: {self.path}")
        self.model.eval()
        self.vision = self._vision_encoder()
        self.load_seconds = time.perf_counter() - started
        from slmkit.models.quantize import weight_bytes

        parameters = count_parameters(self.model)
        size = sum(f.stat().st_size for f in self.path.glob("*.safetensors")) if self.path.is_dir() \
            else self.path.stat().st_size
        cfg = self.model.config
        kind = str(torch_dtype).removeprefix("torch.") + (" int8 weights" if quantize == "int8" else "")
        self.info = ModelInfo(
            path=self.path, architecture=cfg.model_type,
            description=f"{cfg.model_type} {parameters / 1e6:.0f}M {kind} on {self.device} (torch)",
            parameters=parameters, size_bytes=size, file_type=kind,
            context_length=cfg.max_position_embeddings, chat_template=template,
            metadata={"backend": "torch", "model_type": cfg.model_type, "vision": self.vision is not None,
                      "weight_bytes": weight_bytes(self.model)},
        )

    def _vision_encoder(self):
        """The image side of a vision model (`VisionEncoder`); None for a text-only one."""
        if not hasattr(self.model, "encode_image"):
            return None
        from slmkit.text.prompt import encode_prompt
        from slmkit.vision.inputs import VisionEncoder, read_num_crops

        tokenizer = self.tokenizer
        # Any id works: its embedding is overwritten. `<|image|>` where the vocabulary has it
        # (what vLLM uses for Phi-3-vision), so logs of prompt ids read sensibly.
        placeholder = tokenizer.token_id("<|image|>")
        return VisionEncoder(self.model, lambda text: encode_prompt(tokenizer, text),
                             placeholder_id=placeholder if placeholder is not None else 0,
                             num_crops=read_num_crops(self.path if self.path.is_dir() else self.path.parent))

    def _load_folder(self, dtype, progress):
        from slmkit.models.safetensors import load_hf_model
        from slmkit.text.hf_tokenizer import HFTokenizer

        model = load_hf_model(self.path, dtype, self.device, progress=progress, quantize=self.quantize)
        self.tokenizer = HFTokenizer(self.path, eos_token_ids=model.config.eos_token_ids)
        return model, self.tokenizer.chat_template

    def _load_gguf(self, dtype, progress):
        from slmkit.backends.llamacpp import LlamaCppModel
        from slmkit.models.gguf import load_gguf_model

        vocab = LlamaCppModel(self.path, vocab_only=True)  # also rejects a broken file early
        model = load_gguf_model(self.path, dtype, self.device, progress=progress, quantize=self.quantize)
        self._vocab_model = vocab  # owns the llama.cpp vocabulary the tokenizer points into
        self.tokenizer = vocab.tokenizer
        return model, vocab.info.chat_template

    def create_runner(self, *, context_length: int | None = None, max_sequences: int = 16,
                      max_batch_tokens: int = 512, threads: int | None = None, **_llama_only):
        """A `TorchRunner`; llama.cpp-only options (flash attention, unified KV) are ignored."""
        from slmkit.backends.torch_runner import TorchRunner

        context = check_runner_options(context_length=context_length, threads=threads, max_sequences=max_sequences,
                                       trained_context=self.info.context_length)
        return TorchRunner(self.model, context_length=context, max_sequences=max_sequences,
                           max_batch_tokens=max_batch_tokens, threads=threads)

    def close(self) -> None:
        self.model = None
