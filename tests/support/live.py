"""A whole daemon in-process against an in-process fake downloader, over loopback.

`daemon` runs every actor and the real HTTP listener with an admin signed in; `fake` serves a
synthetic catalog whose knobs a test turns while it runs. Used by the fault tests and the
download flow tests.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from actors.notify_urls import NotificationSettings
from daemon.config import Config, DownloadManagerConfig
from daemon.root import Root
from daemon.wiring import run_daemon
from fake_downloader import CatalogSpec, Knobs, build_catalog, serve
from storage.files import Faults, no_faults
from storage.users import Permission, Role
from tests.conftest import FAST_HASHER, make_user
from tests.reliability.harness import ADMIN, ADMIN_PASSWORD, DM_DEFAULTS, TERMINAL
from tests.reliability.invariants import audit_entries, check_settled


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Live:
    """A running in-process daemon, its HTTP client and its data directory."""

    root: Root
    http: httpx.AsyncClient
    db_dir: Path
    spec: CatalogSpec

    async def request(self, index: int) -> str:
        album_id = build_catalog(self.spec).album_ids[index]
        body = {"album_id": album_id, "album_name": "A", "artist_name": "B"}
        response = await self.http.post("/v1/download/request/album", json=body)
        assert response.status_code == 201, response.text
        return album_id

    async def wait_idle(self, within: float = 30) -> None:
        with trio.fail_after(within):
            while True:
                query: dict[str, str | int] = {"top_level_only": "true", "limit": 500}
                response = await self.http.get("/v1/download/admin/requests", params=query)
                assert response.status_code == 200, response.text  # the API is still up
                items = response.json()["items"]
                if items and all(i["status"] in TERMINAL for i in items):
                    return
                await trio.sleep(0.05)

    async def settled(self, albums: list[str], expect: str = "COMPLETED") -> list[dict[str, Any]]:
        check = partial(check_settled, self.db_dir, self.spec, albums, expect)
        items: list[dict[str, Any]] = await trio.to_thread.run_sync(check)
        return items

    def retries(self, error_type: str) -> list[dict[str, Any]]:
        marker = f'"error_type": "{error_type}"'
        return [
            e for e in audit_entries(self.db_dir)
            if e["event_type"] == "RETRY_SCHEDULED" and marker in e["details"]
        ]  # fmt: skip

    def restarts(self) -> float:
        metric = "pezzottify_actor_restarts_total"
        registry = self.root.metrics.registry
        return sum(registry.get_sample_value(metric, {"actor": a}) or 0.0 for a in ACTORS)


ACTORS = ("processor", "scheduler", "watchdog", "stale_detector", "notifier", "http", "metrics")


@asynccontextmanager
async def daemon(
    tmp_path: Path,
    downloader_url: str | None,
    spec: CatalogSpec,
    *,
    read_timeout: float = 10,
    notifications: NotificationSettings | None = None,
    faults: Faults = no_faults,
    **dm: Any,
) -> AsyncIterator[Live]:
    """The whole daemon in-process (every actor, the HTTP listener on loopback) with an admin
    signed in, on `downloader_url` (None: without the download manager), serving a catalog of
    `spec`; `faults` is the test hook of `storage.files.Faults`. Entered again on the same
    `tmp_path`, it is the same daemon restarted."""
    config = Config(
        db_dir=tmp_path, media_path=tmp_path, host="127.0.0.1", port=free_port(),
        metrics_port=free_port(), logging_level="none", downloader_url=downloader_url,
        downloader_timeout_sec=read_timeout, shutdown_timeout_sec=2,
        download_manager=DownloadManagerConfig(**{**DM_DEFAULTS, **dm}),
        notifications=notifications or NotificationSettings(),
    )  # fmt: skip
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        root = await nursery.start(
            partial(run_daemon, config, shutdown=shutdown, hasher=FAST_HASHER, faults=faults)
        )
        if await root.users.db.run(root.users.get, ADMIN) is None:  # not on a restart
            await trio.to_thread.run_sync(
                partial(make_user, root, ADMIN, (Role.Admin,), password=ADMIN_PASSWORD)
            )
        base = f"http://127.0.0.1:{config.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            login = {"user_handle": ADMIN, "password": ADMIN_PASSWORD}
            token = (await http.post("/v1/auth/login", json=login)).json()["token"]
            http.headers["Authorization"] = f"Bearer {token}"
            yield Live(root, http, tmp_path, spec)
            assert (await http.get("/v1/auth/session")).status_code == 200
        shutdown.set()


@asynccontextmanager
async def fake(
    knobs: Knobs, spec: CatalogSpec, port: int = 0
) -> AsyncIterator[tuple[str, trio.CancelScope]]:
    """An in-process fake downloader; cancel the scope to take it down mid-response."""
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[str]) -> None:
            with scope:
                await serve(spec, knobs, port=port, task_status=task_status)

        url = await nursery.start(run)
        yield url, scope
        scope.cancel()


async def until(condition: Callable[[], bool], within: float) -> None:
    with trio.fail_after(within):
        while True:
            if condition():
                return
            await trio.sleep(0.02)


async def sign_in(live: Live, handle: str) -> httpx.AsyncClient:
    """A new regular user who may request albums, signed in with a client of their own (the
    caller closes it)."""
    roles, extra = (Role.Regular,), (Permission.RequestContent,)
    await trio.to_thread.run_sync(partial(make_user, live.root, handle, roles, extra=extra))
    client = httpx.AsyncClient(base_url=str(live.http.base_url), timeout=20)
    login = {"user_handle": handle, "password": "secret-password"}
    response = await client.post("/v1/auth/login", json=login)
    assert response.status_code == 201, response.text
    client.headers["Authorization"] = f"Bearer {response.json()['token']}"
    return client
