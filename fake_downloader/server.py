"""Running the fake downloader under hypercorn, in-process or as the console script's server.

`serve` reports the base URL (``http://HOST:PORT``, the real port when asked for port 0) through
`task_status` once the socket listens; `open_fake_downloader` wraps it for tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import ASGIFramework

from fake_downloader.app import create_app
from fake_downloader.catalog import Catalog, CatalogSpec, build_catalog
from fake_downloader.knobs import Knobs

GRACEFUL_TIMEOUT_S = 1.0


def _config(host: str, port: int) -> Config:
    config = Config()
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    config.bind = [f"{bind_host}:{port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.loglevel = "WARNING"
    config.accesslog = None
    return config


async def serve(
    spec: CatalogSpec | None = None,
    knobs: Knobs | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the catalog of `spec` until cancelled or until `shutdown_trigger` returns."""
    catalog = build_catalog(spec if spec is not None else CatalogSpec())
    app = cast(ASGIFramework, create_app(catalog, knobs))
    config = _config(host, port)
    async with trio.open_nursery() as nursery:
        start = partial(hypercorn_serve, app, config, shutdown_trigger=shutdown_trigger)
        binds: list[str] = await nursery.start(start)
        task_status.started(binds[0])


@dataclass(frozen=True)
class FakeDownloader:
    """A running in-process fake downloader."""

    base_url: str
    catalog: Catalog
    knobs: Knobs

    @property
    def spec(self) -> CatalogSpec:
        return self.catalog.spec


@asynccontextmanager
async def open_fake_downloader(
    spec: CatalogSpec | None = None,
    knobs: Knobs | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[FakeDownloader]:
    """Run a fake downloader for the duration of the block; stops it on exit."""
    spec = spec if spec is not None else CatalogSpec()
    knobs = knobs if knobs is not None else Knobs()
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(partial(serve, spec, knobs, host=host, port=port))
        try:
            yield FakeDownloader(base_url, build_catalog(spec), knobs)
        finally:
            nursery.cancel_scope.cancel()
