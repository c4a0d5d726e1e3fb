"""JSON answers read off the event loop and kept while their database is unchanged.

`cached_json` runs a store read and its serialisation in a worker thread through
`Database.run_cached`, so an answer asked for again before the database's next write costs
neither a thread hop, nor a query, nor a serialisation: the same bytes are sent again. The body
is what `jsonify` makes of the same value (the app's JSON provider, compact, a trailing newline).
A read that raises (an `ApiError` 404, say) is not kept, nor an answer over `KEPT_BYTES`: at
most 256 answers of 64 KiB each per database stay in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from quart import Response, current_app

from storage.db import Database

KEPT_BYTES = 64 * 1024


async def cached_json(db: Database, key: Hashable, read: Callable[[], Any]) -> Response:
    """The JSON response of `read()`; see `Database.run_cached` for what `key` must name."""
    provider = current_app.json

    def read_and_dump() -> bytes:
        return (provider.dumps(read(), separators=(",", ":")) + "\n").encode()

    body = await db.run_cached(key, lambda body: len(body) <= KEPT_BYTES, read_and_dump)
    return current_app.response_class(body, mimetype="application/json")
