"""A converter's input as a prepared copy: links to the source's files and a rewritten config.json.

The tools read configs written by older transformers; adapting the input (never patching the
tools) keeps them unmodified. ``ARCHITECTURE_ALIASES``: transformers 5 renamed some classes that
released checkpoints, llama.cpp and ORT GenAI still spell the old way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from slmkit.convert.registry import HFSource

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
