"""The daemon as a real process: users from `pezzottify-auth`, HTTP, metrics, signals."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.process import DaemonProcess, run_cli

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`


def test_server_auth_cli_login_metrics_and_sigterm(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "--shutdown-timeout-sec", "5")
    try:
        for args in (
            ["add-user", "alice"],
            ["add-login", "alice", "correct horse"],
            ["add-role", "alice", "Admin"],
        ):
            done = run_cli("pezzottify-auth", ["--db-dir", str(tmp_path), *args])
            assert done.returncode == 0, done.stderr
        with httpx.Client(base_url=daemon.url, timeout=10) as client:
            r = client.post(
                "/v1/auth/login", json={"user_handle": "alice", "password": "correct horse"}
            )
            assert r.status_code == 201
            token = r.json()["token"]
            assert "ServerAdmin" in r.json()["permissions"]
            r = client.get("/v1/auth/session", headers={"Authorization": f"Bearer {token}"})
            assert r.json()["user_handle"] == "alice"
        metrics = httpx.get(daemon.metrics_url, timeout=10).text
        assert (
            'pezzottify_http_requests_total{method="POST",route="/v1/auth/login",status="201"} 1.0'
            in metrics
        )
        assert token not in daemon.log
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    for name in ("user.db", "catalog.db", "server.db"):
        assert (tmp_path / name).exists() or name != "user.db"


def test_the_api_keeps_answering_while_nobody_reads_its_stderr(tmp_path: Path) -> None:
    """Its stderr is a pipe nobody drains for a while (a stalled log collector): far more
    request lines than the pipe holds, every request answered at once, every line written out
    once the pipe drains again."""
    requests = 1500  # about 120 KB of log lines; a pipe holds 64 KiB
    daemon = DaemonProcess(tmp_path, "--shutdown-timeout-sec", "5")
    try:
        daemon.pause_reading()
        with httpx.Client(base_url=daemon.url, timeout=5) as client:
            for _ in range(requests):
                assert client.get("/v1/auth/session").status_code == 401
        daemon.resume_reading()
        assert daemon.stop() == 0
    finally:
        daemon.resume_reading()
        daemon.kill()
    assert daemon.log.count("GET /v1/auth/session -> 401") == requests


def test_in_flight_request_finishes_on_sigterm(tmp_path: Path) -> None:
    """A slow login (Argon2) that is in flight when SIGTERM arrives still gets its answer."""
    daemon = DaemonProcess(tmp_path, "--shutdown-timeout-sec", "10")
    try:
        assert (
            run_cli("pezzottify-auth", ["--db-dir", str(tmp_path), "add-user", "bob"]).returncode
            == 0
        )
        assert (
            run_cli(
                "pezzottify-auth", ["--db-dir", str(tmp_path), "add-login", "bob", "password-1"]
            ).returncode
            == 0
        )
        statuses: list[int | str] = []
        client = httpx.Client(base_url=daemon.url, timeout=20)
        client.get("/openapi.json")  # connection open before the signal

        def login() -> None:
            try:
                r = client.post(
                    "/v1/auth/login", json={"user_handle": "bob", "password": "password-1"}
                )
                statuses.append(r.status_code)
            except httpx.TransportError as exc:
                statuses.append(type(exc).__name__)

        workers = [threading.Thread(target=login) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(0.02)
        daemon.signal(signal.SIGTERM)
        for worker in workers:
            worker.join(30)
        client.close()
        assert daemon.wait(20) == 0
        # Requests the server had accepted all got their real answer.
        assert 201 in statuses, statuses
        assert all(s == 201 or isinstance(s, str) for s in statuses), statuses
    finally:
        daemon.kill()


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "--shutdown-timeout-sec", "60")
    try:
        daemon.signal(signal.SIGINT)
        daemon.signal(signal.SIGINT)
        started = time.monotonic()
        daemon.wait(15)
        assert time.monotonic() - started < 10
    finally:
        daemon.kill()
