"""Load a Hugging Face folder: ``config.json`` and ``*.safetensors`` (one file or a sharded index)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from slmkit.errors import ModelLoadError
from slmkit.progress import progress_bar


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder} is not a Hugging Face model folder (no config.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc})") from exc


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"{index} is unreadable ({exc})") from exc
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


def load_hf_model(folder: str | Path, dtype: torch.dtype, device="cpu", *, progress: bool = True):
    """Our model with the folder's weights (its config.json stays in ``model.config.raw``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from slmkit.models.registry import build_model, checkpoint_state_dict, load_weights

    folder = Path(folder)
    config = read_config(folder)
    model = build_model(config, dtype, device)
    state: dict[str, torch.Tensor] = {}
    files = weight_files(folder)
    with progress_bar(f"loading {folder.name}", len(files), enabled=progress) as update:
        for i, path in enumerate(files):
            try:
                state.update(load_file(str(path)))
            except (SafetensorError, OSError) as exc:
                raise ModelLoadError(f"cannot read {path}: {exc}") from exc
            update(i + 1)
    load_weights(model, checkpoint_state_dict(model.config, state), str(folder))
    return model
