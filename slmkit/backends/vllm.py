"""`--backend vllm`: vLLM's engine on CUDA nodes (extra `slmkit[vllm]`).

vLLM is an engine, not a runner: it schedules, batches and samples itself, so it sits behind our
`Engine` seam (requests in, `RequestOutput` deltas out) rather than `backends/base.Runner`. Here
the requirements are checked once, so every entry point (CLI, server, Python API) refuses it with
the same one-line reason where they are not met.
"""

from __future__ import annotations

import importlib.util

from slmkit.errors import BackendUnavailableError


def missing_requirements() -> list[str]:
    """What this machine lacks for vLLM (empty: it can run)."""
    missing = []
    if importlib.util.find_spec("vllm") is None:
        missing.append("vllm is not installed")
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append("no CUDA device")
    except ImportError:
        missing.append("torch is not installed")
    return missing


def require_vllm() -> None:
    missing = missing_requirements()
    if missing:
        raise BackendUnavailableError(
            f"--backend vllm needs CUDA and vllm ({', '.join(missing)}): run it on a GPU node with "
            "pip install 'slmkit[vllm]', or use --backend llamacpp / torch here")
