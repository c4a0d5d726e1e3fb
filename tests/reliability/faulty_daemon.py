"""`python -m tests.reliability.faulty_daemon STEP [server flags...]`: the daemon, killed at STEP.

The crash tests start this instead of `pezzottify-server` to die at a named step of publishing
a file or recording its completion (`storage.files.Faults`): the process exits at once, with no
cleanup, as SIGKILL would leave it. `NOTICE_COMMITTED` is the first completion whose commit
wrote a notification to the outbox (a request's end), before the notifier can have seen it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from daemon.main import main
from storage.files import Faults

KILLED = 137  # the status of a process ended by SIGKILL, as the tests expect
NOTICE_COMMITTED = "after_notice_commit"


def kill_at(step: str) -> Faults:
    def faults(reached: str) -> None:
        if reached == step:
            os._exit(KILLED)

    return faults


def kill_after_notice(queue_db: Path) -> Faults:
    """Die right after the commit that wrote the outbox's first row (in the thread that
    committed it, before the stores tell anyone of the commit)."""

    def faults(reached: str) -> None:
        if reached == "after_commit":
            with contextlib.closing(sqlite3.connect(f"file:{queue_db}?mode=ro", uri=True)) as db:
                if db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]:
                    os._exit(KILLED)

    return faults


def faults_for(step: str, argv: Sequence[str]) -> Faults:
    if step != NOTICE_COMMITTED:
        return kill_at(step)
    db_dir = Path(argv[list(argv).index("--db-dir") + 1])
    return kill_after_notice(db_dir / "download_queue.db")


if __name__ == "__main__":
    sys.exit(main(sys.argv[2:], faults=faults_for(sys.argv[1], sys.argv[2:])))
