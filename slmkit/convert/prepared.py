"""A converter's input as a prepared copy: links to the source's files and a rewritten config.json.

The tools read configs written by older transformers; adapting the input (never patching the
tools) keeps them unmodified. ``ARCHITECTURE_ALIASES``: transformers 5 renamed some classes that
released checkpoints, llama.cpp and ORT GenAI still spell the old way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: this module stays a leaf the engines may import
    from slmkit.convert.converter import HFSource

ARCHITECTURE_ALIASES = {"PhimoeForCausalLM": "PhiMoEForCausalLM"}


def released_architecture(architecture: str) -> str:
    return ARCHITECTURE_ALIASES.get(architecture, architecture)


def linked_copy(source: HFSource, folder: Path, config: dict) -> Path:
    """``folder`` with links to every file of the source but config.json, which is ``config``."""
    folder.mkdir(parents=True)
    for file in source.folder.iterdir():
        if file.is_file() and file.name != "config.json":
            os.symlink(file.resolve(), folder / file.name)
    config = dict(config)
    if config.get("architectures"):
        config["architectures"] = [released_architecture(a) for a in config["architectures"]]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def both_rope_key_styles(config: dict) -> dict:
    """``config`` with its rope settings under both ``rope_parameters`` (``rope_type``; what
    transformers 5 writes) and ``rope_scaling`` (``type``; what released checkpoints, ORT GenAI's
    builder and mlx-lm read), plus ``rope_theta`` and ``original_max_position_embeddings`` at the
    top level where only the rope section had them."""
    config = dict(config)
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    kind = rope.get("rope_type") or rope.get("type")
    if kind:
        rope["rope_type"] = rope["type"] = kind
        config["rope_parameters"] = rope
        config["rope_scaling"] = dict(rope)
        if "rope_theta" in rope:
            config.setdefault("rope_theta", rope["rope_theta"])
        if "original_max_position_embeddings" in rope:
            config.setdefault("original_max_position_embeddings", rope["original_max_position_embeddings"])
    elif isinstance(config.get("rope_parameters"), dict) and "rope_theta" in config["rope_parameters"]:
        config.setdefault("rope_theta", config["rope_parameters"]["rope_theta"])
    return config


_SAFETENSORS_DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}


def stored_dtype(folder: Path) -> str | None:
    """The float dtype a checkpoint's safetensors store its weights in (from the first file's
    header), as a config's ``dtype`` names it; None if it is not one of those."""
    from slmkit.models.safetensors import tensor_sizes, weight_files

    files = weight_files(folder)[:1]
    kinds = {dtype for _, dtype in tensor_sizes(files).values()}
    floats = [_SAFETENSORS_DTYPES[k] for k in sorted(kinds) if k in _SAFETENSORS_DTYPES]
    return floats[0] if len(floats) == 1 else None
