"""Pick the engine for a model file or folder and load it.

``auto``: llama.cpp for a GGUF file, ONNX Runtime GenAI for a folder with ``genai_config.json``
(what `slm convert --to onnx` writes), OpenVINO for one with ``openvino_model.xml`` (`--to
openvino`), MLX for a folder mlx-lm wrote (`slm convert --to mlx`), torch for a Hugging Face
folder of an architecture we implement, transformers for any other Hugging Face folder (or one
that brings its own code); ``mlx`` also runs a Hugging Face folder of a model type mlx-lm has.
``torch`` also runs a GGUF (dequantized into our own model); llama.cpp cannot read a folder,
torch cannot read ONNX.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from slmkit.errors import BackendUnavailableError, InvalidParameterError

BACKENDS = ("auto", "llamacpp", "torch", "ortgenai", "openvino", "transformers", "mlx", "vllm")


# engine -> (the Python module it needs, the slmkit extra that installs it)
ENGINE_NEEDS = {"llamacpp": ("llama_cpp", None), "torch": ("torch", "torch"), "ortgenai": ("onnxruntime_genai", "onnx"),
                "openvino": ("openvino", "openvino"), "transformers": ("transformers", "transformers"),
                "mlx": ("mlx_lm", "mlx")}

# model_type values our own torch engine implements (slmkit/models/registry.py ARCHITECTURES,
# named here so choosing an engine needs no torch import)
NATIVE_MODEL_TYPES = frozenset({"llama", "phi3", "phi3_v", "phimoe"})


@dataclass(frozen=True)
class EngineSupport:
    engine: str
    installed: bool
    extra: str | None  # pip install 'slmkit[extra]' when not installed

    def describe(self) -> str:
        if self.installed:
            return f"{self.engine} (installed)"
        return f"{self.engine} (needs pip install 'slmkit[{self.extra}]')"


def engine_support(path: Path) -> list[EngineSupport]:
    """Which engines can run this model, the first being what ``auto`` picks, and whether each is installed."""
    found = []
    for engine in engines_for(path):
        module, extra = ENGINE_NEEDS[engine]
        found.append(EngineSupport(engine, importlib.util.find_spec(module) is not None, extra))
    return found


def engines_for(path: Path) -> list[str]:
    """The engines that can run this file or folder, the first being what ``auto`` picks."""
    from slmkit.backends.mlx import is_mlx_folder, mlx_runs_model_type
    from slmkit.backends.openvino import is_openvino_folder
    from slmkit.backends.ortgenai import is_ortgenai_folder

    if is_ortgenai_folder(path):
        return ["ortgenai"]
    if is_openvino_folder(path):
        return ["openvino"]
    if is_mlx_folder(path):
        return ["mlx"]
    if path.is_dir():
        from slmkit.backends.transformers import read_folder_config

        config = read_folder_config(path)
        # mlx-lm runs its own model classes only, never a folder's bundled code.
        mlx = ["mlx"] if not config.get("auto_map") and mlx_runs_model_type(config.get("model_type")) else []
        if config.get("model_type") in NATIVE_MODEL_TYPES and not config.get("auto_map"):
            return ["torch", "transformers", *mlx]
        return ["transformers", *mlx]
    return ["llamacpp", "torch"]


# Measured here (README "Qualcomm NPU"): the onnxruntime-qnn 2.7.0 Linux x86_64 wheel ships no
# libQnnCpu.so, and its HTP emulator takes 4 of the 31 nodes of a `slm convert --to onnx`
# model (dynamic shapes, GroupQueryAttention, SkipSimplifiedLayerNormalization stay on the CPU).
QNN_REFUSAL = ("--device qnn is not supported: onnxruntime-qnn's Linux wheel has no CPU backend (libQnnCpu.so) "
               "and the CPU-built ONNX models do not map onto QNN; on a Snapdragon PC run a QNN-compiled "
               "model with ONNX Runtime GenAI (README: Qualcomm NPU)")


def check_device(device: str) -> None:
    """Refuse a device no engine here can use, before anything loads (the CLI calls it before serving)."""
    if device.lower() in ("qnn", "npu"):
        raise BackendUnavailableError(QNN_REFUSAL)


@dataclass
class BackendOptions:
    backend: str = "auto"
    dtype: str = "auto"  # torch only: auto, float32, bfloat16, float16
    device: str = "auto"  # torch only: auto, cpu, cuda, cuda:1
    threads: int | None = None  # ortgenai and openvino fix them when the model loads (the others per runner)
    quantize: str = "none"  # torch only: none, int8 (weight-only)
    trust_remote_code: bool = False  # transformers only: run the code a local folder brings (auto_map)

    def resolve(self, path: Path) -> str:
        check_device(self.device)
        if self.backend not in BACKENDS:
            raise InvalidParameterError("backend", f"{self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.backend == "vllm":
            from slmkit.backends.vllm import require_vllm

            require_vllm()
            return "vllm"
        engines = engines_for(path)
        if self.backend == "auto":
            return engines[0]
        if self.backend not in engines:
            kind = {"ortgenai": "an ONNX Runtime GenAI folder", "openvino": "an OpenVINO folder",
                    "torch": "a Hugging Face folder", "mlx": "an MLX folder",
                    "transformers": "a Hugging Face folder our torch engine has no model for",
                    "llamacpp": "a GGUF file"}[engines[0]]
            raise InvalidParameterError(
                "backend", f"{path} is {kind}; the {self.backend} engine cannot run it — use "
                           f"{' or '.join(f'--backend {e}' for e in engines)}")
        return self.backend


def load_model(path: str | Path, options: BackendOptions | None = None, *, progress: bool = False):
    """A `LlamaCppModel`, `TorchModel`, `OrtGenAIModel`, `OpenVINOModel`, `TransformersModel` or `MLXModel`:
    each has ``info``, ``tokenizer``,
    ``create_runner``."""
    path = Path(path)
    options = options or BackendOptions()
    backend = options.resolve(path)
    if backend == "vllm":  # an engine of its own (backends/vllm.VllmEngine), not a runner
        raise BackendUnavailableError("--backend vllm serves through `slm serve` only; "
                                      "use --backend torch --device cuda for this command")
    module, extra = ENGINE_NEEDS[backend]
    if importlib.util.find_spec(module) is None:
        raise BackendUnavailableError(f"the {backend} engine needs the Python package {module}: "
                                      f"pip install 'slmkit[{extra}]'")
    if backend == "ortgenai":
        from slmkit.backends.ortgenai import OrtGenAIModel

        return OrtGenAIModel(path, threads=options.threads)
    if backend == "openvino":
        from slmkit.backends.openvino import OpenVINOModel

        return OpenVINOModel(path, threads=options.threads)
    if backend == "transformers":
        from slmkit.backends.transformers import TransformersModel

        return TransformersModel(path, dtype=options.dtype, device=options.device,
                                 trust_remote_code=options.trust_remote_code)
    if backend == "mlx":
        from slmkit.backends.mlx import MLXModel

        return MLXModel(path)
    if backend == "torch":
        from slmkit.backends.torch_native import TorchModel

        return TorchModel(path, dtype=options.dtype, device=options.device, quantize=options.quantize,
                          progress=progress)
    from slmkit.backends.llamacpp import LlamaCppModel

    return LlamaCppModel(path)
