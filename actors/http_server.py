"""The HTTP actor: serves the API app and the metrics app with hypercorn inside the root nursery.

Both listeners share the daemon's shutdown event as hypercorn's `shutdown_trigger`: on shutdown
they stop accepting connections and let in-flight requests finish for up to `graceful_timeout`
(hypercorn's own default of a few seconds is raised to the daemon's `shutdown_timeout_sec`).
Idle keep-alive connections are closed at once on shutdown (see `shield_response_end`).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from daemon.logs import write_line

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


def shield_response_end(app: Any) -> Any:
    """Wrap an ASGI app so that sending a response's last body message cannot be cancelled.

    Under hypercorn, that send is where a keep-alive connection is recycled and its idle timer
    armed, and quart-trio cancels its request nursery at that very moment (hypercorn tells it
    the stream closed). The cancellation killed the idle timer: idle connections then never
    timed out, and a shutdown waited the whole graceful timeout for any open one. Hypercorn
    already shields the socket write itself, so the shield adds no unbounded wait.
    """

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_last_shielded(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await app(scope, receive, send_last_shielded if scope["type"] == "http" else send)

    return wrapped


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
        self.app = shield_response_end(app)
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
                write_line(self.announce.format(url=url))
            task_status.started(self.urls)
