"""A notification target for tests: a tiny HTTP server on loopback collecting the JSON POSTs
Apprise's `json://` sends, answering each with the next scripted status (200 once the script
is spent)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    port: int
    statuses: list[int] = field(default_factory=list)  # answers to come, in order
    received: list[dict[str, Any]] = field(default_factory=list)  # bodies answered 2xx
    attempts: int = 0  # every POST, whatever it was answered

    def url(self, secret: str = "") -> str:
        auth = f"user:{secret}@" if secret else ""
        return f"json://{auth}127.0.0.1:{self.port}/hook"

    def titles(self) -> list[str]:
        return [body.get("title", "") for body in self.received]


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
                status = state.statuses.pop(0) if state.statuses else 200
                if status < 300:
                    state.received.append(body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
