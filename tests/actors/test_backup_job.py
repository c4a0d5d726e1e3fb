"""The `backup` job (SPEC §15): a backup per run, the oldest pruned beyond `keep`, a report naming
the folder, and a prompt stop with nothing left behind when a shutdown deadline cancels it.

The copies run in real worker threads (no autojump clock: the job's time is the copy's).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from actors.jobs.backup import backup_job, backup_off_loop
from actors.jobs.base import ShutdownBehavior
from storage.backup import BackupError, list_backups
from storage.offload import Offload
from storage.users import Role, UserStore

T0 = datetime(2024, 5, 1, 3, 0, 0, tzinfo=UTC)


def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    users = UserStore.open(folder / "user.db")
    users.create_user("ann", (Role.Regular,))
    users.db.close()
    return folder


async def test_each_run_writes_a_backup_and_keeps_the_newest(tmp_path: Path) -> None:
    db_dir, dest = data_dir(tmp_path), tmp_path / "backups"
    times = iter(T0 + timedelta(days=d) for d in range(4))
    job = backup_job(db_dir, dest, keep=2, wall_clock=lambda: next(times))
    assert job.shutdown is ShutdownBehavior.WAIT_FOR_COMPLETION

    reports = [await job.run() for _ in range(4)]

    assert [p.name for p in list_backups(dest)] == ["20240503T030000Z", "20240504T030000Z"]
    assert reports[0]["folder"] == str(dest / "20240501T030000Z")
    assert reports[0]["databases"] == {
        "user.db": (dest / "20240504T030000Z/user.db").stat().st_size
    }
    assert [r["pruned"] for r in reports] == [[], [], ["20240501T030000Z"], ["20240502T030000Z"]]


async def test_a_failed_backup_prunes_nothing(tmp_path: Path) -> None:
    db_dir, dest = data_dir(tmp_path), tmp_path / "backups"
    times = iter(T0 + timedelta(days=d) for d in range(3))
    job = backup_job(db_dir, dest, keep=1, wall_clock=lambda: next(times))
    await job.run()
    (db_dir / "user.db").unlink()
    with pytest.raises(BackupError, match="no database found"):
        await job.run()
    assert [p.name for p in list_backups(dest)] == ["20240501T030000Z"]


async def test_a_cancelled_backup_stops_at_once_and_leaves_no_partial_folder(
    tmp_path: Path,
) -> None:
    db_dir, dest = tmp_path / "data", tmp_path / "backups"
    db_dir.mkdir()
    with sqlite3.connect(db_dir / "catalog.db") as conn:  # 40 MB: a copy in 1-page steps lasts
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE blobs (b BLOB)")
        conn.executemany("INSERT INTO blobs VALUES (zeroblob(4000))", [()] * 10_000)
    started = time.monotonic()
    with trio.move_on_after(0.05) as scope:
        await backup_off_loop(Offload(1), db_dir, dest, T0, step_pages=1)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 2  # the copy saw the stop at its next step
    assert list(dest.iterdir()) == []
