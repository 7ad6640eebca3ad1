"""Load a Hugging Face folder: ``config.json`` and ``*.safetensors`` (one file or a sharded index)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from slmkit.errors import ModelLoadError
from slmkit.progress import progress_bar

MAX_CONFIG_BYTES = 4 << 20  # real config.json files are a few KB; longrope factor lists stay under 100 KB


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder} is not a Hugging Face model folder (no config.json)")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{path} is {path.stat().st_size:,} bytes, not a model config (at most "
                             f"{MAX_CONFIG_BYTES:,}); the folder is corrupted")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # UnicodeDecodeError included
        raise ModelLoadError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} holds a JSON {type(config).__name__}, not an object; it is not a model config")
    return config


def tensor_sizes(files: list[Path]) -> dict[str, tuple[int, str]]:
    """Tensor name -> (element count, dtype), from the safetensors headers alone (no weights read);
    a file whose header is broken is a `ModelLoadError`."""
    from safetensors import SafetensorError, safe_open

    sizes: dict[str, tuple[int, str]] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="numpy") as f:
                for key in f.keys():
                    info = f.get_slice(key)
                    sizes[key] = math.prod(info.get_shape()), info.get_dtype().lower()
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{path} is not a readable safetensors file ({exc}); download it again") from exc
    return sizes


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelLoadError(f"{index} is unreadable ({exc})") from exc
        strays = [name for name in names if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..")]
        if strays:  # a shard name like "../x" would read outside the folder
            raise ModelLoadError(f"{index} names shards outside the folder ({strays[:3]}); it is corrupted")
        files = [folder / name for name in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{folder} is missing shards {missing}; download them again")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder} has no *.safetensors weights (.bin checkpoints are not read: "
                             "save with safe_serialization=True)")
    return files


def load_hf_model(folder: str | Path, dtype: torch.dtype, device="cpu", *, progress: bool = True,
                  quantize: str = "none"):
    """Our model with the folder's weights (its config.json stays in ``model.config.raw``);
    ``quantize="int8"``: weight-only int8 linear layers (slmkit/models/quantize.py)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from slmkit.models.registry import build_model, checkpoint_state_dict, load_weights, model_type_of

    folder = Path(folder)
    config = read_config(folder)
    model_type_of(config)  # an architecture we cannot run says so before any missing weights do
    files = weight_files(folder)
    model = build_model(config, dtype, device, weight_elements=sum(n for n, _ in tensor_sizes(files).values()),
                        source=str(folder), empty=True, quantize=quantize)
    state: dict[str, torch.Tensor] = {}
    with progress_bar(f"loading {folder.name}", len(files), enabled=progress) as update:
        for i, path in enumerate(files):
            try:
                state.update(load_file(str(path)))
            except (SafetensorError, OSError) as exc:
                raise ModelLoadError(f"cannot read {path}: {exc}") from exc
            update(i + 1)
    load_weights(model, checkpoint_state_dict(model.config, state), str(folder), device=device, quantize=quantize)
    return model
