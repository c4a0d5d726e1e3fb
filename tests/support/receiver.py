"""A notification target for tests: a tiny HTTP server on loopback collecting the JSON POSTs
Apprise's `json://` sends, answering each with the next scripted status (200 once the script
is spent).

It can answer slowly (`delay`, seconds before each answer) or not at all while held (`hold()`
until `release()`), so a test can catch the daemon with a delivery in flight: `attempts` counts
every POST as it arrives, `received` the bodies answered 2xx (a held one once released, even if
its sender is gone by then: the target had the message).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOLD_AT_MOST_S = 60.0  # a held answer is given anyway after this long: no test hangs on it


@dataclass
class Receiver:
    port: int
    statuses: list[int] = field(default_factory=list)  # answers to come, in order
    received: list[dict[str, Any]] = field(default_factory=list)  # bodies answered 2xx
    attempts: int = 0  # every POST, whatever it was answered
    delay: float = 0.0  # seconds before each answer
    gate: threading.Event = field(default_factory=threading.Event)  # set: answers go out

    def __post_init__(self) -> None:
        self.gate.set()

    def url(self, secret: str = "") -> str:
        auth = f"user:{secret}@" if secret else ""
        return f"json://{auth}127.0.0.1:{self.port}/hook"

    def titles(self) -> list[str]:
        return [body.get("title", "") for body in self.received]

    def hold(self) -> None:
        """POSTs arrive and are counted, but none is answered until `release()`."""
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()


@contextmanager
def receiver(statuses: list[int] | None = None) -> Iterator[Receiver]:
    state = Receiver(0, list(statuses or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with lock:
                state.attempts += 1
            state.gate.wait(HOLD_AT_MOST_S)
            time.sleep(state.delay)
            with lock:
                status = state.statuses.pop(0) if state.statuses else 200
                if status < 300:
                    state.received.append(body)
            with contextlib.suppress(OSError):  # the sender is gone (killed while held)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def finish(self) -> None:
            with contextlib.suppress(OSError):  # as above
                super().finish()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True  # a held answer never keeps the test from ending
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release()
        server.shutdown()
        server.server_close()
