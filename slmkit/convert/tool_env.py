"""An isolated virtual environment for a converter whose pins clash with ours.

optimum-intel's OpenVINO exporter needs ``transformers<5.6``; slmkit pins 5.24. Loosening our
pins is not an option, so the exporter gets a venv of its own under the store's tools folder
(``$SLMKIT_TOOLS``, default ``$SLMKIT_HOME/tools``), made with pip on first use and reused after.
A folder is named by the tool and a digest of its requirements: a change of pins makes a new one,
and a ``.complete`` marker is written last, so an interrupted install is redone, never half-used.

torch: the exporter traces the model with torch, and PyPI's default Linux wheel is a multi-GB
CUDA build. The venv asks for exactly the torch build this environment runs (``2.13.0+cpu``
here), which pip finds where it found ours (this project's machines carry it in pip's
find-links); it never falls back to the CUDA wheel.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from slmkit.errors import OfflineError
from slmkit.progress import progress_bar, status

_COLLECTING = re.compile(r"^(Collecting|Processing|Requirement already satisfied:?)\s+(\S+)")


def tools_root() -> Path:
    from slmkit.store.store import default_home

    return Path(os.environ.get("SLMKIT_TOOLS") or default_home() / "tools")


def host_torch_requirement(fallback: str) -> str:
    """``torch==<the version installed here>``: the same (CPU) build as ours, local label included."""
    try:
        return f"torch=={importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError:
        return fallback


@dataclass(frozen=True)
class ToolEnv:
    """A venv for one tool: ``requirements`` install with their dependencies, ``no_deps`` without
    (a package whose declared dependencies we must not take, e.g. a CUDA-only torchvision)."""

    name: str
    requirements: tuple[str, ...]
    no_deps: tuple[str, ...] = ()

    @property
    def folder(self) -> Path:
        digest = hashlib.sha256("\n".join((*self.requirements, "--no-deps", *self.no_deps)).encode()).hexdigest()[:10]
        return tools_root() / f"{self.name}-{digest}"

    @property
    def python(self) -> Path:
        return self.folder / "bin" / "python"

    @property
    def ready(self) -> bool:
        return (self.folder / ".complete").is_file()

    def ensure(self, *, progress: bool = True) -> Path:
        """The venv's folder, created and installed first if it is not there yet."""
        if self.ready:
            return self.folder
        root = tools_root()
        root.mkdir(parents=True, exist_ok=True)
        # Built beside its final place and renamed, so a killed install never looks complete.
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", dir=root))
        try:
            status(f"installing {self.name} into its own environment {self.folder} (once; pip, a few minutes)...",
                   enabled=progress)
            subprocess.run([sys.executable, "-m", "venv", str(scratch)], check=True, capture_output=True)
            with progress_bar(f"installing {self.name}", len(self.requirements) + len(self.no_deps),
                              enabled=progress, unit="packages") as update:
                seen: set[str] = set()

                def on_line(line: str) -> None:
                    if match := _COLLECTING.match(line):
                        seen.add(match.group(2).lower())
                        update(len(seen), total=max(len(seen) + 1, len(self.requirements) + len(self.no_deps)))

                self._pip(scratch, list(self.requirements), on_line)
                if self.no_deps:
                    self._pip(scratch, ["--no-deps", *self.no_deps], on_line)
            (scratch / ".complete").write_text("\n".join(self.requirements + self.no_deps) + "\n")
            # Console scripts name the scratch folder in their shebang: a tool runs as
            # ``python -m`` (`python`), which does not care where the venv lies.
            if self.folder.exists():
                shutil.rmtree(self.folder)
            scratch.rename(self.folder)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
        return self.folder

    def _pip(self, venv: Path, args: list[str], on_line) -> None:
        cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
               "--progress-bar", "off", *args]
        tail: deque[str] = deque(maxlen=40)
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.strip()
                if line:
                    tail.append(line)
                    on_line(line)
            code = proc.wait()
        if code != 0:
            reason = next((line for line in reversed(tail) if line.startswith("ERROR")), tail[-1] if tail else "")
            raise OfflineError(f"installing {self.name}'s environment failed ({reason[:300]}); it needs PyPI "
                               f"(pip install {' '.join(args)})")

