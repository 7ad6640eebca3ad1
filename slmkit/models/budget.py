"""Refuse a model before allocating it: the parameters its config implies are compared with the
tensors really on disk, and the bytes it would take with the memory there is.

A config.json (or GGUF header) saying ``hidden_size: 10**9`` would otherwise make torch try to
allocate petabytes: at best a `RuntimeError` deep inside ``nn.Linear``, at worst the OOM killer
taking the whole server with it.
"""

from __future__ import annotations

from pathlib import Path

from slmkit.errors import ModelLoadError

# The config may undercount (biases, norms) but never claim much more than the weights hold.
SLACK = 1.05


def check_matches_weights(config_parameters: int, weight_elements: int, source: str | Path) -> None:
    if config_parameters > weight_elements * SLACK + 1_000_000:
        raise ModelLoadError(
            f"{source}: the config describes a model of {config_parameters:,} parameters but the weight "
            f"files hold {weight_elements:,}; the config does not belong to these weights (or is corrupted)")


def available_memory(device: str = "cpu") -> int | None:
    """Bytes that can still be allocated on `device` (None when it cannot be told)."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:  # a container's own limit (cgroup v2) is lower than the host's free memory
        cap = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if cap != "max":
            limits.append(int(cap) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_allocation(n_bytes: int, what: str, device: str = "cpu") -> None:
    """Raise `ModelLoadError` when `n_bytes` for `what` cannot fit in the memory left on `device`."""
    free = available_memory(device)
    if free is not None and n_bytes > free:
        raise ModelLoadError(f"{what} needs {n_bytes / 1e9:.1f} GB but only {max(free, 0) / 1e9:.1f} GB of "
                             f"memory is free on {device}; free memory, or use a smaller or quantized model "
                             "(GGUF on the llama.cpp engine)")
