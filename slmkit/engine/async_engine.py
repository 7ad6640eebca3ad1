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
from slmkit.errors import EngineDeadError, OverloadedError, SlmkitError
from slmkit.types import RequestOutput

log = logging.getLogger("slmkit.engine")

_LIVENESS_CHECK_SECONDS = 1.0  # how often a waiting caller checks that the loop thread lives


@dataclass
class EngineSnapshot:
    """Gauges read by /metrics and /api/ps (updated by the loop thread after every step)."""

    running: int = 0
    waiting: int = 0
    kv_used_cells: int = 0  # cells of running sequences
    kv_cached_cells: int = 0  # cells kept as reusable prefixes
    kv_total_cells: int = 0
    drafted_tokens: int = 0  # speculation totals since the engine started
    accepted_tokens: int = 0
    draft_seconds: float = 0.0  # in the draft model (draft-model speculation)


class EngineLoop:
    """Runs an `Engine` on a daemon thread; thread-safe `submit` / `abort` / `stop`."""

    def __init__(self, engine: Engine, *, name: str = "slmkit-engine"):
        self.engine = engine
        self.snapshot = EngineSnapshot(kv_total_cells=engine.runner.kv_cells)
        self._commands: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._accepting = True
        # Callbacks of requests not finished yet, so that a loop that dies anyway still answers them.
        self._pending: dict[str, OutputCallback] = {}
        self._pending_lock = threading.Lock()
        self.failure: str | None = None  # why the loop thread died, if it did
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: Request, emit: OutputCallback) -> None:
        """Queue a request; errors found in the loop arrive as an output with ``error`` set."""
        if not self._accepting:
            raise OverloadedError("the server is shutting down; retry on another instance")
        if not self.alive:
            raise EngineDeadError(self.failure)
        guarded = self._guard(request.request_id, emit)
        with self._pending_lock:
            self._pending[request.request_id] = emit
        self._commands.put(lambda: self._add(request, guarded))

    def _guard(self, request_id: str, emit: OutputCallback) -> OutputCallback:
        """The callback as the engine calls it: a caller that is gone (its event loop closed)
        cannot raise into the engine, and a finished request leaves the pending table."""
        def guarded(out: RequestOutput) -> None:
            if out.finished:
                with self._pending_lock:
                    self._pending.pop(request_id, None)
            try:
                emit(out)
            except Exception:  # noqa: BLE001 - the caller left; nothing to tell it
                log.debug("dropped an output for %s: its caller is gone", request_id)

        return guarded

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
        except Exception as exc:  # noqa: BLE001 - that request is refused, the loop goes on
            error = exc if isinstance(exc, SlmkitError) else SlmkitError(
                f"the request could not start: {type(exc).__name__}: {exc}")
            if not isinstance(exc, SlmkitError):
                log.error("adding %s failed", request.request_id, exc_info=exc)
            emit(RequestOutput("", [], finish_reason="abort", request_id=request.request_id, error=error))

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - recorded, reported on /health, callers told
            self.failure = f"{type(exc).__name__}: {exc}"
            log.critical("the engine loop died: %s", self.failure, exc_info=exc)
        finally:
            self._accepting = self._accepting and self.failure is None
            self._fail_pending()
            self._update_snapshot()

    def _loop(self) -> None:
        stopping = False
        while True:
            block = not self.engine.has_work and not stopping
            try:
                command = self._commands.get(block=block)
                while True:
                    if command is None:
                        stopping = True
                    else:
                        self._run_command(command)
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

    def _run_command(self, command: Callable[[], None]) -> None:
        try:
            command()
        except Exception:  # noqa: BLE001 - e.g. an abort racing a finish; the loop goes on
            log.exception("an engine command failed")

    def _fail_pending(self) -> None:
        """Answer every caller still waiting: the loop will not."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        error = EngineDeadError(self.failure) if self.failure else OverloadedError("the engine stopped")
        for request_id, emit in pending.items():
            try:
                emit(RequestOutput("", [], finish_reason="abort", request_id=request_id, error=error))
            except Exception:  # noqa: BLE001 - that caller is gone too
                pass

    def _update_snapshot(self) -> None:
        sched = self.engine.scheduler
        self.snapshot = EngineSnapshot(
            running=len(sched.running), waiting=len(sched.waiting),
            kv_used_cells=sched.running_cells(), kv_cached_cells=sched.cached_cells(),
            kv_total_cells=self.engine.runner.kv_cells,
            drafted_tokens=self.engine.stats.drafted, accepted_tokens=self.engine.stats.accepted,
            draft_seconds=self.engine.stats.draft_seconds,
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
            raise EngineDeadError(self.loop.failure)
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()

        def emit(out: RequestOutput) -> None:
            loop.call_soon_threadsafe(outputs.put_nowait, out)

        self.loop.submit(request, emit)
        finished = False
        try:
            while True:
                try:
                    out = await asyncio.wait_for(outputs.get(), _LIVENESS_CHECK_SECONDS)
                except asyncio.TimeoutError:
                    if not self.loop.alive and outputs.empty():
                        finished = True
                        raise EngineDeadError(self.loop.failure) from None
                    continue
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
