"""Start the server under uvicorn (what `slm serve` calls)."""

from __future__ import annotations

import logging

import uvicorn

from slmkit.server.app import create_app
from slmkit.server.config import ServerConfig


def serve(config: ServerConfig, *, log_level: str = "info", access_log: bool = True) -> None:
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("slmkit.access").disabled = not access_log
    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=max(5, int(config.request_timeout)), timeout_keep_alive=30)
