"""The HTTP actor: serves the API app and the metrics app with hypercorn inside the root nursery.

Both listeners share the daemon's shutdown event as hypercorn's `shutdown_trigger`: on shutdown
they stop accepting connections and let in-flight requests finish for up to `graceful_timeout`
(hypercorn's own default of a few seconds is raised to the daemon's `shutdown_timeout_sec`).
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

log = logging.getLogger("pezzottify.http")


@functools.lru_cache(maxsize=1)
def _quiet_hypercorn_logger() -> logging.Logger:
    logger = logging.getLogger("pezzottify.hypercorn")
    logger.setLevel(logging.WARNING)
    return logger


def hypercorn_config(host: str, port: int, graceful_timeout: float) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = _quiet_hypercorn_logger()
    config.keep_alive_timeout = 75
    return config


class HttpServer:
    """Serves one ASGI app on one address; reports the bound URLs when listening."""

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        shutdown: trio.Event,
        graceful_timeout: float,
        announce: str,
    ) -> None:
        self.app = app
        self.config = hypercorn_config(host, port, graceful_timeout)
        self.shutdown = shutdown
        self.announce = announce
        self.urls: list[str] = []

    async def run(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until shutdown; in-flight requests get the graceful timeout to finish."""
        async with trio.open_nursery() as nursery:
            self.urls = await nursery.start(
                functools.partial(serve, self.app, self.config, shutdown_trigger=self.shutdown.wait)
            )
            for url in self.urls:
                print(self.announce.format(url=url), file=sys.stderr, flush=True)
            task_status.started(self.urls)
