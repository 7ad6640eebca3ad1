"""Run a converter in a child process (llama.cpp's script, ORT GenAI's builder): stream its log
into a progress callback, and turn a failure into one line that says why.

A child process, not an import: both tools hold a whole model's worth of memory, change global
state (logging, torch threads, ``sys.path`` for llama.cpp's own ``gguf``) and may exit on error.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

from slmkit.errors import BackendUnavailableError, ModelLoadError

# Lines that explain a failure better than the traceback's last frame.
_ERROR_LINE = re.compile(r"(Error|error:|Exception|NotImplemented|not supported|Unsupported)")
_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")


def run_converter(cmd: Sequence[str], *, label: str, extra: str, on_line: Callable[[str], None],
                  env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    """Run ``cmd``; every output line (``\\r`` or ``\\n`` ended) goes to ``on_line``. A missing
    Python module names the extra to install; any other failure raises with the telling line."""
    tail: deque[str] = deque(maxlen=80)
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env,
                          cwd=cwd, bufsize=0) as proc:
        pending = b""
        assert proc.stdout is not None
        for block in iter(lambda: proc.stdout.read(4096), b""):
            pending += block
            *lines, pending = re.split(rb"[\r\n]", pending)
            for raw in lines:
                line = raw.decode("utf-8", errors="replace").strip()
                if line:
                    tail.append(line)
                    on_line(line)
        if pending.strip():
            tail.append(pending.decode("utf-8", errors="replace").strip())
        code = proc.wait()
    if code == 0:
        return
    text = "\n".join(tail)
    missing = _MISSING_MODULE.search(text)
    if missing:
        raise BackendUnavailableError(f"{label} needs the Python module {missing.group(1)!r}: "
                                      f"pip install 'slmkit[{extra}]'")
    reason = next((line for line in reversed(tail) if _ERROR_LINE.search(line)), tail[-1] if tail else "")
    why = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
    raise ModelLoadError(f"{label} failed ({why}): {reason[:400] or 'no output'}")
