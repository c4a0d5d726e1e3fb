"""Run the project's console scripts as real processes in tests.

`DaemonProcess` starts `pezzottify-server` on free loopback ports, waits for its listening lines
and collects its stderr in the background so a chatty daemon never blocks on a full pipe.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent


def script(name: str) -> list[str]:
    """The installed console script, or the module behind it when not installed."""
    path = BIN / name
    if path.exists():
        return [str(path)]
    module = {
        "pezzottify-server": "daemon",
        "pezzottify-auth": "daemon.auth_cli",
        "pezzottify-admin": "daemon.admin_cli",
        "pezzottify-fake-downloader": "fake_downloader",
    }[name]
    return [sys.executable, "-m", module]


class DaemonProcess:
    def __init__(
        self,
        db_dir: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        ready_timeout: float = 20,
        command: Sequence[str] | None = None,
    ) -> None:
        """`command` runs instead of `pezzottify-server`, with the same flags after it."""
        self.db_dir = db_dir
        args = [
            *(command or script("pezzottify-server")),
            "--db-dir",
            str(db_dir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            *extra,
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reading = threading.Event()  # cleared: stderr is left to fill up, as a stalled
        self._reading.set()  # log collector would leave it
        self.url = ""
        self.metrics_url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(ready_timeout):
            self.kill()
            raise AssertionError("daemon did not become ready:\n" + self.log)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._reading.wait()
            self.lines.append(line.rstrip("\n"))
            if m := re.match(r"metrics on (http://\S+)", line):
                self.metrics_url = m.group(1)
            if m := re.match(r"listening on (http://\S+)", line):
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        status = self.proc.wait(timeout)
        self._close()
        return status

    def _close(self) -> None:
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)


def run_cli(
    name: str, args: Sequence[str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*script(name), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def wait_until(predicate: object, timeout: float = 10, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")
