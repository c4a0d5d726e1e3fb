"""The API benchmark's ceiling: one bare route on the daemon's own HTTP stack.

A QuartTrio app with a single `GET /bare` answering a small JSON object, served by hypercorn
with the configuration the daemon's HTTP actor uses (`actors.http_server.hypercorn_config`), in
its own process. No authentication, no database, no logging, no metrics: what is left is the
cost of the stack itself, which no route of the daemon can beat.
"""

from __future__ import annotations

import sys
from functools import partial

import trio
from hypercorn.trio import serve
from quart import jsonify
from quart.typing import ResponseReturnValue
from quart_trio import QuartTrio

from actors.http_server import hypercorn_config


def create_app() -> QuartTrio:
    app = QuartTrio("bench-bare")

    @app.get("/bare")
    async def bare() -> ResponseReturnValue:
        return jsonify({"status": "ok"})

    return app


async def main() -> None:
    config = hypercorn_config("127.0.0.1", 0, graceful_timeout=1.0)
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, create_app(), config))
        print(f"listening on {urls[0]}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    trio.run(main)
