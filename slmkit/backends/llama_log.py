"""llama.cpp's log stream, captured instead of sprayed on stderr.

llama.cpp logs from C through one process-wide callback. We keep the recent lines (so a failed
load can say *why*), print them when ``SLMKIT_LLAMA_LOG=1``, and let a caller listen for a while
(the quantizer reads its per-tensor progress from these lines).
"""

from __future__ import annotations

import collections
import ctypes
import os
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import llama_cpp

_recent: collections.deque[str] = collections.deque(maxlen=200)
_listeners: list[Callable[[str], None]] = []
_lock = threading.Lock()
_initialized = False
_callback = None  # keep the ctypes callback alive for the life of the process


def _on_log(level: int, text: bytes | None, user_data: ctypes.c_void_p) -> None:
    line = (text or b"").decode("utf-8", errors="replace")
    _recent.append(line)
    for listener in list(_listeners):
        listener(line)
    if os.environ.get("SLMKIT_LLAMA_LOG") == "1":
        sys.stderr.write(line)


def init_llama() -> None:
    """Initialise llama.cpp once per process and route its logs through `_on_log`."""
    global _initialized, _callback
    with _lock:
        if _initialized:
            return
        _callback = llama_cpp.llama_log_callback(_on_log)
        llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _initialized = True


def recent_errors(limit: int = 3) -> str:
    """The last few log lines that look like errors, joined for an error message."""
    lines = [l.strip() for l in _recent if "error" in l.lower() or "failed" in l.lower()]
    return "; ".join(lines[-limit:])


@contextmanager
def listen(listener: Callable[[str], None]) -> Iterator[None]:
    """Call ``listener(line)`` for every log line while the block runs."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
