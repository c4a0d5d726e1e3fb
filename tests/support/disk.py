"""A full disk as SQLite reports it, for tests of what the daemon does when it cannot write."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any


def database_full() -> sqlite3.OperationalError:
    """A genuine "database or disk is full" from SQLite: a database given no room to grow."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("PRAGMA max_page_count = 1")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (zeroblob(10000))")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("SQLite found room")


def full_for(times: int, real: Callable[..., Any]) -> Callable[..., Any]:
    """`real`, except that its first `times` calls find the database full."""
    left = [times]

    def call(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise database_full()
        return real(*args, **kwargs)

    return call
