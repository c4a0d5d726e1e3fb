"""Processes the benchmarks run: the daemon, the fake downloader, a bare server, the load.

Everything listens on 127.0.0.1 with ports chosen by the kernel. The daemon runs as the real
`pezzottify-server` process (`tests.support.process.DaemonProcess`) with a TOML file for the
settings a benchmark needs; its users and sessions are created in `user.db` before it starts,
so no benchmark pays for a password hash.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage.users import Permission, Role, UserStore
from tests.support.process import DaemonProcess, script

READY_TIMEOUT_S = 60.0


def daemon_config(
    db_dir: Path,
    downloader_url: str,
    *,
    albums_per_hour: int = 1_000_000,
    process_interval: float = 5.0,
    jobs_off: Sequence[str] = (),
    sections: Sequence[str] = (),
) -> Path:
    """Write the benchmark's TOML (limits high enough never to bind unless asked); `sections`
    are more TOML lines, at the end."""
    lines = [
        f'downloader_url = "{downloader_url}"',
        "shutdown_timeout_sec = 5",
        "[download_manager]",
        f"max_albums_per_hour = {albums_per_hour}",
        f"max_albums_per_day = {max(albums_per_hour, 1) * 24}",
        "user_max_requests_per_day = 1000000",
        "user_max_queue_size = 1000000",
        f"process_interval_secs = {process_interval}",
    ]
    for job in jobs_off:
        lines += [f"[background_jobs.{job}]", "enabled = false"]
    lines += sections
    path = db_dir / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def add_session(db_dir: Path, handle: str, role: Role, *extra: Permission) -> str:
    """Create `handle` with `role` (and `extra` permissions) and a session; return its token."""
    users = UserStore.open(db_dir / "user.db")
    try:
        user = users.create_user(handle, (role,))
        for permission in extra:
            users.add_permission(handle, permission)
        token = secrets.token_urlsafe(32)
        users.create_session(user.id, token, {"device_name": "bench"})
        return token
    finally:
        users.db.close()


@contextmanager
def daemon(db_dir: Path, config: Path | None = None) -> Iterator[DaemonProcess]:
    extra = ["--config", str(config)] if config is not None else []
    proc = DaemonProcess(db_dir, *extra, ready_timeout=READY_TIMEOUT_S)
    try:
        yield proc
    finally:
        proc.stop(30)


def _start_announcing(args: list[str], pattern: str) -> tuple[subprocess.Popen[str], str]:
    """Start a process that prints `pattern` (one URL group) on stderr when ready."""
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        with proc.stderr:  # closed at the end of the output, when the process has ended
            for line in proc.stderr:
                if not found and (match := re.search(pattern, line)):
                    found.append(match.group(1))
                    ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(READY_TIMEOUT_S) or not found:
        proc.kill()
        raise RuntimeError(f"{args} did not start")
    return proc, found[0]


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def fake_downloader(*flags: str) -> Iterator[str]:
    """The fake downloader as its own process; yields its base URL."""
    args = [*script("pezzottify-fake-downloader"), "--host", "127.0.0.1", "--port", "0", *flags]
    proc, url = _start_announcing(args, r"listening on (http://\S+)")
    try:
        yield url
    finally:
        _stop(proc)


@contextmanager
def bare_server() -> Iterator[str]:
    """`bench.bare_server` as its own process; yields its base URL."""
    args = [sys.executable, "-m", "bench.bare_server"]
    proc, url = _start_announcing(args, r"listening on (http://\S+)")
    try:
        yield url
    finally:
        _stop(proc)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def load(
    url: str,
    paths: Sequence[str],
    *,
    headers: Sequence[str] = (),
    connections: int = 32,
    duration: float = 2.0,
    samples: bool = False,
) -> dict[str, Any]:
    """Run `bench.load` as a separate process against `url`; return its JSON summary."""
    args = [sys.executable, "-m", "bench.load", "--port", str(port_of(url))]
    args += [f"--path={p}" for p in paths]
    args += [f"--header={h}" for h in headers]
    args += ["--connections", str(connections), "--duration", str(duration)]
    if samples:
        args.append("--samples")
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} requests to {paths} did not answer 2xx")
    return result


def rss_bytes(pid: int) -> int:
    """Resident set size of a running process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
