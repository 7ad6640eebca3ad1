"""Start the server under uvicorn (what `slm serve` calls)."""

from __future__ import annotations

import contextlib
import logging

import uvicorn

from slmkit.server.app import create_app
from slmkit.server.config import ServerConfig


def serve(config: ServerConfig, *, log_level: str = "info", access_log: bool = True) -> None:
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("slmkit.access").disabled = not access_log
    app = create_app(config)
    server = _Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                                    timeout_graceful_shutdown=max(5, int(config.request_timeout)),
                                    timeout_keep_alive=30))
    server.run()


class _Server(uvicorn.Server):
    """uvicorn, but a SIGTERM / SIGINT that drained the running streams exits 0: uvicorn would
    re-raise the signal after its graceful shutdown, and an orchestrator reads that as a crash."""

    @contextlib.contextmanager
    def capture_signals(self):
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()
