"""`GET /health` (SPEC §15): public, 200 while the databases answer and the disk takes writes,
503 naming the check that failed (a database made unreadable, a full disk through the media
folder's fault hook), 200 with the downloader unreachable or disabled, and an answer within its
bound whatever hangs behind it."""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import daemon.health
from actors.downloader import DownloaderClient
from daemon.config import Config
from daemon.health import HealthProbe
from daemon.root import Root
from daemon.services import close_root
from storage.files import Faults, no_faults
from tests.conftest import open_test_root, serve

DOWN = "http://127.0.0.1:9"  # nothing listens on the discard port
CHECKS = ("databases", "disk", "downloader")


def config_for(tmp_path: Path, downloader_url: str | None = None) -> Config:
    return Config(db_dir=tmp_path, media_path=tmp_path / "media", downloader_url=downloader_url)


@asynccontextmanager
async def health_of(
    tmp_path: Path,
    *,
    downloader_url: str | None = None,
    faults: Faults = no_faults,
    answer: Callable[[httpx.Request], Any] | None = None,
) -> AsyncIterator[tuple[Root, Any]]:
    """A root on `tmp_path` (its downloader answering with `answer` when given) and a client
    of its app; checks are never reused between calls."""
    root = open_test_root(config_for(tmp_path, downloader_url), faults=faults)
    root = dataclasses.replace(root, health=HealthProbe(fresh_for=0))
    try:
        if answer is not None:
            assert root.downloads is not None
            client = DownloaderClient(DOWN, 5, transport=httpx.MockTransport(answer))
            root = dataclasses.replace(
                root, downloads=dataclasses.replace(root.downloads, downloader=client)
            )
        async with serve(root) as http:
            yield root, http
    finally:
        close_root(root)


async def health(http: Any) -> tuple[int, dict[str, Any]]:
    response = await http.get("/health")  # no session: the route is public
    return response.status_code, await response.get_json()


def probe_files(folder: Path) -> list[Path]:
    return list(folder.rglob(".health-probe-*"))


def failing(step: str, error: OSError) -> Faults:
    def faults(reached: str) -> None:
        if reached == step:
            raise error

    return faults


async def test_a_healthy_server_answers_200_without_a_session(tmp_path: Path) -> None:
    async with health_of(tmp_path) as (_, http):
        code, body = await health(http)
    assert code == 200
    assert body == {
        "status": "ok", "version": daemon.health.VERSION, "uptime_sec": body["uptime_sec"],
        "checks": {"databases": "ok", "disk": "ok", "downloader": "disabled"},
    }  # fmt: skip
    assert isinstance(body["uptime_sec"], int) and 0 <= body["uptime_sec"] < 60
    assert body["version"] == "0.1.0"
    assert probe_files(tmp_path) == []  # the probe files are gone


async def test_a_downloader_down_is_reported_with_a_200(tmp_path: Path) -> None:
    async with health_of(tmp_path, downloader_url=DOWN) as (_, http):
        code, body = await health(http)
    assert (code, body["status"], body["checks"]) == (
        200, "ok", {"databases": "ok", "disk": "ok", "downloader": "unreachable"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "expected"), [(404, "ok"), (200, "ok"), (429, "ok"), (502, "unreachable")]
)
async def test_a_downloader_that_answers_below_500_is_there(
    tmp_path: Path, status: int, expected: str
) -> None:
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(status, json={"error": "x"})

    async with health_of(tmp_path, downloader_url=DOWN, answer=answer) as (_, http):
        code, body = await health(http)
    assert (code, body["checks"]["downloader"]) == (200, expected)
    assert asked == ["/"]


def break_header(path: Path) -> None:
    """Garbage over the file's first page, in place: what a disk fault or a stray write
    leaves, and what root reads as surely as anyone (a chmod would not stop it)."""
    with open(path, "r+b") as file:
        file.write(os.urandom(4096))


async def test_an_unreadable_database_is_a_503_naming_it(tmp_path: Path) -> None:
    async with health_of(tmp_path, downloader_url=DOWN) as (_, http):
        assert (await health(http))[0] == 200
        break_header(tmp_path / "catalog.db")
        code, body = await health(http)
        assert (code, body["status"]) == (503, "degraded")
        assert body["checks"]["databases"] == "unreadable: catalog.db: not an SQLite database file"
        assert body["checks"]["disk"] == "ok"
        assert str(tmp_path) not in str(body)  # no path leaves a public route
        (tmp_path / "download_queue.db").unlink()  # gone from under the daemon
        code, body = await health(http)
        assert code == 503
        assert body["checks"]["databases"] == (
            "unreadable: catalog.db: not an SQLite database file; "
            "unreadable: download_queue.db: No such file or directory"
        )


async def test_a_full_disk_is_a_503_through_the_fault_hook(tmp_path: Path) -> None:
    full = failing("disk_probe", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    async with health_of(tmp_path, faults=full) as (_, http):
        code, body = await health(http)
    assert (code, body["status"]) == (503, "degraded")
    assert body["checks"] == {"databases": "ok", "disk": "full", "downloader": "disabled"}
    assert probe_files(tmp_path) == []  # removed on the way out


async def test_a_disk_refusing_writes_says_which_folder(tmp_path: Path) -> None:
    refused = failing("disk_probe", PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    async with health_of(tmp_path, faults=refused) as (_, http):
        code, body = await health(http)
    assert (code, body["checks"]["disk"]) == (503, "unwritable: media folder: Permission denied")


@pytest.fixture
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(daemon.health, "CHECK_TIMEOUT_S", 0.3)
    return 0.3


@pytest.fixture
def stuck() -> Iterator[threading.Event]:
    """Released at the end of the test: what a hung disk holds until then."""
    release = threading.Event()
    yield release
    release.set()


async def test_a_hung_disk_and_downloader_do_not_hang_the_answer(
    tmp_path: Path, quick_checks: float, stuck: threading.Event
) -> None:
    def hang(step: str) -> None:
        if step == "disk_probe":
            stuck.wait(30)

    async def never(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with health_of(tmp_path, downloader_url=DOWN, faults=hang, answer=never) as (_, http):
        started = trio.current_time()
        code, body = await health(http)
        took = trio.current_time() - started
        assert took < quick_checks + 1.0, took
        assert code == 503
        assert body["checks"] == {
            "databases": "ok", "disk": "unwritable: no answer within 0.3 s",
            "downloader": "unreachable",
        }  # fmt: skip
        stuck.set()


async def test_checks_are_shared_by_callers_within_a_second(tmp_path: Path) -> None:
    probes: list[str] = []

    def count(step: str) -> None:
        if step == "disk_probe":
            probes.append(step)

    root = open_test_root(config_for(tmp_path), faults=count)
    try:
        async with serve(root) as http, trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(health, http)
        # The media folder and the database folder: one probe each, for all eight callers.
        assert len(probes) == 2
    finally:
        close_root(root)
