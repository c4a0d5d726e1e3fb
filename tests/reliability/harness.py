"""Real processes for the reliability tests: the fake downloader and the daemon on one data dir.

`FakeDownloaderProcess` runs `pezzottify-fake-downloader` over a `CatalogSpec` (small albums,
throttled audio so a kill lands in the middle of a download). `Rig` owns one data directory: it
writes a config TOML pointing at the fake (short backoffs and idle interval, capacity limits out
of the way), creates an admin with `pezzottify-auth`, and starts, kills and stops successive
`pezzottify-server` incarnations on it, keeping every incarnation's log for failure messages.
Requests and the idle wait go over HTTP as a user's client would; the invariants are checked on
the files themselves by `tests.reliability.invariants`.

Every wait is bounded and fails with the daemon's log; every process started is stopped by the
fixtures that own it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from fake_downloader import Catalog, CatalogSpec, build_catalog
from tests.reliability.faulty_daemon import KILLED
from tests.reliability.invariants import queue_items, unsettled
from tests.support.process import DaemonProcess, run_cli, script

FAULT_POINTS = (
    "after_write", "after_fsync", "after_rename", "after_dirfsync", "before_commit",
    "after_commit",
)  # fmt: skip
FAULT_EXIT = KILLED  # what a daemon killed at a fault point exits with
ADMIN, ADMIN_PASSWORD = "admin", "reliability-admin-password"
TERMINAL = ("COMPLETED", "FAILED")
DM_DEFAULTS: dict[str, Any] = {
    "process_interval_secs": 0.2,
    "initial_backoff_secs": 0.2,
    "max_backoff_secs": 1,
    "max_albums_per_hour": 1000,
    "max_albums_per_day": 1000,
    "user_max_requests_per_day": 1000,
    "user_max_queue_size": 1000,
}
LOG_TAIL = 120


def spec_flags(spec: CatalogSpec) -> list[str]:
    return [
        "--seed", str(spec.seed), "--artists", str(spec.artists),
        "--albums-per-artist", str(spec.albums_per_artist),
        "--tracks-per-album", str(spec.tracks_per_album),
        "--audio-bytes", str(spec.audio_bytes), "--image-bytes", str(spec.image_bytes),
        "--missing-every", str(spec.missing_every),
    ]  # fmt: skip


class FakeDownloaderProcess:
    """`pezzottify-fake-downloader` serving `spec` with extra knob flags; `stop()` ends it."""

    def __init__(self, spec: CatalogSpec, *flags: str, port: int = 0) -> None:
        self.spec = spec
        self.catalog: Catalog = build_catalog(spec)
        args = [*script("pezzottify-fake-downloader"), "--port", str(port), *spec_flags(spec)]
        self.proc = subprocess.Popen(
            [*args, *flags], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.url = ""
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                if found := re.search(r"listening on (http://\S+)", line):
                    self.url = found.group(1)
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(20) or not self.url:
            self.stop()
            raise AssertionError("fake downloader did not start:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


class Rig:
    """One data directory and the daemon incarnations that run on it."""

    def __init__(
        self,
        root: Path,
        fake: FakeDownloaderProcess,
        *,
        top: dict[str, Any] | None = None,
        dm: dict[str, Any] | None = None,
        jobs: dict[str, dict[str, Any]] | None = None,
        notifications: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.db_dir = root / "db"
        self.db_dir.mkdir(parents=True, exist_ok=True)
        self.fake = fake
        self.top = {"shutdown_timeout_sec": 5, "logging_level": "none", **(top or {})}
        self.dm = {**DM_DEFAULTS, **(dm or {})}
        self.jobs = jobs or {}
        self.notifications = notifications or {}
        self.config_path = root / "config.toml"
        self.write_config()
        self.logs: list[str] = []
        self.daemon: DaemonProcess | None = None
        self._client: httpx.Client | None = None
        create_admin(self.db_dir)

    def write_config(self, downloader_url: str | None = None) -> None:
        """(Re)write the TOML; the next incarnation reads it."""
        if downloader_url is not None:
            self.top["downloader_url"] = downloader_url
        top = {"downloader_url": self.fake.url, **self.top}
        lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
        lines += ["[download_manager]", *(f"{k} = {toml_value(v)}" for k, v in self.dm.items())]
        if self.notifications:
            lines += [
                "[notifications]",
                *(f"{k} = {toml_value(v)}" for k, v in self.notifications.items()),
            ]
        for job, settings in self.jobs.items():
            lines += [
                f"[background_jobs.{job}]",
                *(f"{k} = {toml_value(v)}" for k, v in settings.items()),
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    # -- incarnations --------------------------------------------------------------------------

    def start(self, fault: str | None = None) -> DaemonProcess:
        """Start an incarnation (dying at `fault` if given). It may die before it is ready."""
        assert self.daemon is None, "the previous incarnation is still running"
        faulty = [sys.executable, "-m", "tests.reliability.faulty_daemon", fault or ""]
        command = faulty if fault else None
        self.daemon = DaemonProcess(self.db_dir, "--config", str(self.config_path), command=command)
        return self.daemon

    def _ended(self, status: int) -> int:
        assert self.daemon is not None
        self.logs.append(self.daemon.log + f"\n[exit status {status}]")
        if self._client is not None:
            self._client.close()
            self._client = None
        self.daemon = None
        return status

    def kill(self) -> int:
        """SIGKILL the incarnation (if it still runs); return its exit status."""
        assert self.daemon is not None
        if self.daemon.proc.poll() is None:
            self.daemon.proc.send_signal(signal.SIGKILL)
        return self._ended(self.daemon.wait(10))

    def signal(self, signum: int) -> None:
        assert self.daemon is not None
        self.daemon.signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the incarnation to exit on its own; fail with its log after `timeout`."""
        assert self.daemon is not None
        try:
            status = self.daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            message = f"daemon did not exit within {timeout} s\n{self.log_tail()}"
            raise AssertionError(message) from None
        return self._ended(status)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait: the graceful path. Return the exit status. The admin session's
        idle keep-alive connection stays open meanwhile: it must not hold the shutdown up."""
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def close(self) -> None:
        """Kill whatever still runs (fixture teardown)."""
        if self.daemon is not None:
            self.kill()

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        current = [self.daemon.log] if self.daemon is not None else []
        text = "\n----- restart -----\n".join([*self.logs, *current])
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP ----------------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        """An admin session on the running incarnation."""
        if self._client is None:
            assert self.daemon is not None and self.daemon.url, "no ready daemon"
            client = httpx.Client(base_url=self.daemon.url, timeout=15)
            login = {"user_handle": ADMIN, "password": ADMIN_PASSWORD}
            response = client.post("/v1/auth/login", json=login)
            assert response.status_code == 201, response.text
            client.headers["Authorization"] = f"Bearer {response.json()['token']}"
            self._client = client
        return self._client

    def request_albums(self, indices: Sequence[int]) -> list[str]:
        """Request the fake's albums by index over HTTP; return the request ids."""
        catalog = self.fake.catalog
        ids = []
        for index in indices:
            body = {
                "album_id": catalog.album_ids[index],
                "album_name": catalog.album_names[index],
                "artist_name": catalog.artist_names[catalog.album_artist(index)],
            }
            response = self.client().post("/v1/download/request/album", json=body)
            assert response.status_code == 201, response.text
            ids.append(response.json()["request_id"])
        return ids

    def wait_idle(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until every top-level item is terminal (over HTTP); return those items."""
        items: list[dict[str, Any]] = []

        def idle() -> bool:
            nonlocal items
            query: dict[str, str | int] = {"top_level_only": "true", "limit": 500}
            response = self.client().get("/v1/download/admin/requests", params=query)
            assert response.status_code == 200, response.text
            items = response.json()["items"]
            return bool(items) and all(item["status"] in TERMINAL for item in items)

        self.wait_for(idle, timeout, "the queue did not become idle")
        return items

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                rows = [(r["content_type"], r["status"], r["error_type"]) for r in self.items()]
                raise AssertionError(f"{what} within {timeout} s; queue: {rows}\n{self.log_tail()}")
            if self.daemon is not None and self.daemon.proc.poll() is not None:
                raise AssertionError(f"{what}: the daemon died\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_death(self, timeout: float = 60) -> int:
        """For an incarnation whose fault point is sure to be hit: its exit status. (Polling for
        idle would race with the kill: the commit that hits the point is visible to a reader a
        moment before the process dies.)"""
        assert self.daemon is not None
        return self._ended(self.daemon.wait(timeout))

    def wait_death_or_idle(self, timeout: float = 60) -> int | None:
        """For an incarnation started with a fault point: its exit status once the point is
        hit, or None (still running) if the queue became idle first."""
        assert self.daemon is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.daemon.proc.poll()
            if status is not None:
                return self._ended(self.daemon.wait(5))
            if self.items() and not unsettled(self.db_dir):
                return None
            time.sleep(0.05)
        raise AssertionError(f"neither a fault nor idle within {timeout} s\n{self.log_tail()}")

    def items(self) -> list[dict[str, Any]]:
        return queue_items(self.db_dir)


def create_admin(db_dir: Path) -> None:
    """An Admin user with a password, through `pezzottify-auth`'s prompt (one process)."""
    auth(
        db_dir,
        [f"add-user {ADMIN}", f"add-login {ADMIN} {ADMIN_PASSWORD}", f"add-role {ADMIN} Admin"],
    )


def auth(db_dir: Path, commands: Sequence[str]) -> None:
    """Run `pezzottify-auth` commands through its prompt, in one process; all must succeed."""
    script_text = "".join(f"{line}\n" for line in [*commands, "exit"])
    done = run_cli("pezzottify-auth", ["--db-dir", str(db_dir)], stdin=script_text)
    assert done.returncode == 0 and "error" not in done.stderr, done.stderr


@contextlib.contextmanager
def running_fake(spec: CatalogSpec, *flags: str) -> Iterator[FakeDownloaderProcess]:
    fake = FakeDownloaderProcess(spec, *flags)
    try:
        yield fake
    finally:
        fake.stop()


@contextlib.contextmanager
def rig(root: Path, fake: FakeDownloaderProcess, **kwargs: Any) -> Iterator[Rig]:
    r = Rig(root, fake, **kwargs)
    try:
        yield r
    finally:
        r.close()


def chaos_seed() -> int:
    """`CHAOS_SEED` from the environment, else one from the clock (printed by the caller)."""
    raw = os.environ.get("CHAOS_SEED", "")
    return int(raw) if raw.strip() else time.time_ns() % 2**32
