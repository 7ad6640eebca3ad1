"""A model's manifest: where its files are and how to talk to it (like an Ollama Modelfile)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slmkit.errors import ModelLoadError

MANIFEST_FILE = "manifest.json"


@dataclass
class Manifest:
    name: str
    variants: dict[str, str]  # tag -> file (absolute, or relative to the model's folder)
    default_variant: str = "original"
    format: str = "gguf"
    template: str | None = None  # overrides the chat template in the model's metadata
    system: str | None = None  # default system prompt when a chat has none
    parameters: dict[str, Any] = field(default_factory=dict)  # default SamplingParams fields
    messages: list[dict[str, str]] = field(default_factory=list)  # a conversation every chat starts with
    license: str | None = None
    source: str = ""  # where the weights came from, for `slm show`
    notes: dict[str, Any] = field(default_factory=dict)  # e.g. the quantization check result

    def variant_path(self, folder: Path, tag: str) -> Path:
        path = Path(self.variants[tag])
        return path if path.is_absolute() else folder / path

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (MANIFEST_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n")
        tmp.replace(folder / MANIFEST_FILE)

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        path = folder / MANIFEST_FILE
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(
                f"the manifest {path} is unreadable ({exc}); remove the model with "
                f"`slm rm {folder.name}` and pull or import it again"
            ) from exc
