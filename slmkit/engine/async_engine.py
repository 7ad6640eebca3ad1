"""The engine on a thread of its own, and the asyncio face the server talks to.

One thread owns the `Engine` (and so the model): it drains a command queue, runs `step()` while
there is work and sleeps on the queue when there is none. Callers never touch the engine: they
send commands (add, abort) and receive `RequestOutput`s through the callback each request
brings, which `AsyncEngine` turns into an async iterator per request. Leaving that iterator
early (a client disconnect, a timeout, ``break``) aborts the request and frees its KV cells.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from slmkit.engine.engine import Engine, OutputCallback, Request
from slmkit.errors import OverloadedError, SlmkitError
from slmkit.types import RequestOutput

log = logging.getLogger("slmkit.engine")


@dataclass
class EngineSnapshot:
    """Gauges read by /metrics and /api/ps (updated by the loop thread after every step)."""

    running: int = 0
    waiting: int = 0
    kv_used_cells: int = 0  # cells of running sequences
    kv_cached_cells: int = 0  # cells kept as reusable prefixes
    kv_total_cells: int = 0


class EngineLoop:
    """Runs an `Engine` on a daemon thread; thread-safe `submit` / `abort` / `stop`."""

    def __init__(self, engine: Engine, *, name: str = "slmkit-engine"):
        self.engine = engine
        self.snapshot = EngineSnapshot(kv_total_cells=engine.runner.kv_cells)
        self._commands: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: Request, emit: OutputCallback) -> None:
        """Queue a request; errors found in the loop arrive as an output with ``error`` set."""
        if not self._accepting:
            raise OverloadedError("the server is shutting down; retry on another instance")
        self._commands.put(lambda: self._add(request, emit))

    def abort(self, request_id: str) -> None:
        self._commands.put(lambda: self.engine.abort(request_id))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Refuse new requests; with ``drain``, let running ones finish first; then end the thread."""
        self._accepting = False
        if not drain:
            self._commands.put(lambda: self.engine.abort_all(OverloadedError("the server stopped")))
        self._commands.put(None)
        self._thread.join(timeout)

    # -- the loop thread ------------------------------------------------------------------
    def _add(self, request: Request, emit: OutputCallback) -> None:
        try:
            self.engine.add_request(request, emit)
        except SlmkitError as exc:
            emit(RequestOutput("", [], finish_reason="abort", request_id=request.request_id, error=exc))

    def _run(self) -> None:
        stopping = False
        while True:
            block = not self.engine.has_work and not stopping
            try:
                command = self._commands.get(block=block)
                while True:
                    if command is None:
                        stopping = True
                    else:
                        command()
                    command = self._commands.get_nowait()
            except queue.Empty:
                pass
            if stopping and not self.engine.has_work:
                break
            try:
                self.engine.step()
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the server's engine
                log.exception("engine step failed; aborting its requests")
                self.engine.abort_all(SlmkitError(f"the engine failed: {exc}"))
            self._update_snapshot()
        self._update_snapshot()

    def _update_snapshot(self) -> None:
        sched = self.engine.scheduler
        self.snapshot = EngineSnapshot(
            running=len(sched.running), waiting=len(sched.waiting),
            kv_used_cells=sched.running_cells(), kv_cached_cells=sched.cached_cells(),
            kv_total_cells=self.engine.runner.kv_cells,
        )


class AsyncEngine:
    """``async for out in engine.generate(request)``: the asyncio side of an `EngineLoop`."""

    def __init__(self, engine: Engine, *, name: str = "slmkit-engine"):
        self.engine = engine
        self.loop = EngineLoop(engine, name=name)

    @property
    def snapshot(self) -> EngineSnapshot:
        return self.loop.snapshot

    async def generate(self, request: Request) -> AsyncIterator[RequestOutput]:
        """Deltas of one request; raises its `SlmkitError` if the engine refuses or fails it.

        Validation (prompt too long, bad token ids) happens before this returns its first
        item, in the caller's thread.
        """
        self.engine.validate(request)
        if not self.loop.alive:
            raise OverloadedError("the engine has stopped; restart the server")
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()

        def emit(out: RequestOutput) -> None:
            loop.call_soon_threadsafe(outputs.put_nowait, out)

        self.loop.submit(request, emit)
        finished = False
        try:
            while True:
                out = await outputs.get()
                if out.error is not None:
                    finished = True
                    raise out.error
                finished = out.finished
                yield out
                if finished:
                    return
        finally:
            if not finished:
                self.loop.abort(request.request_id)

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        self.loop.stop(drain=drain, timeout=timeout)
