"""llama.cpp's own HF → GGUF converter, from the sources the pinned llama-cpp-python sdist vendors.

The converter must write what the llama.cpp we run can read, so it comes from the same release:
``pip download --no-binary :all: llama-cpp-python==<installed version>`` (PyPI only), unpacked
once under ``~/.cache/slmkit`` — ``convert_hf_to_gguf.py``, its ``conversion/`` package and
``gguf-py``. `make llama-convert` fetches it ahead of time; otherwise the first conversion does.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from slmkit.errors import OfflineError
from slmkit.progress import status

# What the converter needs from the llama.cpp tree (the rest is C++ we do not build here).
_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def llama_cpp_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def cache_root() -> Path:
    """Where the Makefile keeps its builds too (the sdist is shared with `make llama-server`)."""
    return Path.home() / ".cache" / "slmkit"


def sources_dir(version: str | None = None) -> Path:
    return cache_root() / f"llama.cpp-convert-{version or llama_cpp_version()}"


def converter_script(*, progress: bool = True) -> Path:
    """``convert_hf_to_gguf.py`` of the installed llama-cpp-python's llama.cpp, fetched on first use."""
    version = llama_cpp_version()
    folder = sources_dir(version)
    script = folder / "convert_hf_to_gguf.py"
    if (folder / ".complete").is_file() and script.is_file():
        return script
    sdist = _download_sdist(version, progress)
    _unpack(sdist, folder, version)
    return script


def _download_sdist(version: str, progress: bool) -> Path:
    target = cache_root() / "sdist"
    found = sorted(target.glob(f"llama*cpp*python-{version}.tar.gz"))
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    status(f"fetching the llama.cpp sources of llama-cpp-python {version} from PyPI (about 75 MB, once)...",
           enabled=progress)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--no-binary", ":all:", "-d", str(target), f"llama-cpp-python=={version}"]
    done = subprocess.run(cmd, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = sorted(target.glob(f"llama*cpp*python-{version}.tar.gz"))
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise OfflineError(f"cannot fetch the llama-cpp-python {version} sdist from PyPI for the GGUF "
                           f"converter ({last}); run `make llama-convert` where PyPI is reachable")
    return found[0]


def _unpack(sdist: Path, folder: Path, version: str) -> None:
    prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Unpack beside the final folder and rename, so a killed run never leaves half a tree behind.
    scratch = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    with tarfile.open(sdist) as archive:
        wanted = []
        for member in archive.getmembers():
            if not member.name.startswith(prefix):
                continue
            relative = member.name[len(prefix):]
            if relative.startswith(_MEMBERS) and (member.isfile() or member.isdir()):
                member.name = relative
                wanted.append(member)
        archive.extractall(scratch, members=wanted, filter="data")
    if not (scratch / "convert_hf_to_gguf.py").is_file():
        raise OfflineError(f"{sdist} has no vendor/llama.cpp/convert_hf_to_gguf.py; delete it and retry")
    (scratch / ".complete").write_text(version + "\n")
    scratch.chmod(0o755)  # mkdtemp made it private
    if folder.exists():
        shutil.rmtree(folder)
    scratch.rename(folder)


if __name__ == "__main__":  # `make llama-convert`
    print(converter_script())
