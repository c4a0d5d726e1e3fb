"""Backups of live databases, their checks, pruning and restore (SPEC §15; `storage.backup`).

The databases are the real stores' files; a writer thread commits users while a backup is
taken, as the daemon would. What a user would notice is checked on disk: the folders in the
backup directory, the rows a copy holds, the files beside a restored database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.backup import (
    MANIFEST,
    BackupError,
    list_backups,
    make_backup,
    prune_backups,
    restore_backup,
    verify_backup,
)
from storage.catalog import CatalogStore
from storage.db import Database
from storage.jobs import JobStore
from storage.lock import DirInUse, DirLock, holding
from storage.queue import MIGRATIONS as QUEUE_MIGRATIONS
from storage.users import Role, UserStore

T0 = datetime(2024, 5, 1, 3, 15, 0, tzinfo=UTC)
ALL = ["catalog.db", "download_queue.db", "server.db", "user.db"]


@pytest.fixture
def db_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory with the four databases, left open (WAL files beside them) as a
    running daemon leaves them, and three users."""
    folder = tmp_path / "data"
    folder.mkdir()
    users = UserStore.open(folder / "user.db")
    for handle in ("ann", "bob", "cid"):
        users.create_user(handle, (Role.Regular,))
    opened = [
        users.db,
        CatalogStore.open(folder / "catalog.db").db,
        JobStore.open(folder / "server.db").db,
        Database(folder / "download_queue.db", QUEUE_MIGRATIONS),
    ]
    yield folder
    for db in opened:
        db.close()


def handles(path: Path) -> list[str]:
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT handle FROM users ORDER BY id")]


def integrity(path: Path) -> list[str]:
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]


def test_a_backup_holds_every_database_checked_and_self_contained(
    db_dir: Path, tmp_path: Path
) -> None:
    made = make_backup(db_dir, tmp_path / "backups", T0)
    assert made is not None
    assert made.folder == tmp_path / "backups" / "20240501T031500Z"
    assert sorted(p.name for p in made.folder.iterdir()) == sorted([*ALL, MANIFEST])
    assert sorted(c.name for c in made.copies) == ALL
    for name in ALL:
        assert integrity(made.folder / name) == ["ok"]
        with sqlite3.connect(made.folder / name) as conn:  # one file, no WAL to carry along
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert handles(made.folder / "user.db") == ["ann", "bob", "cid"]
    manifest = json.loads((made.folder / MANIFEST).read_text())
    assert manifest["created_at"] == "2024-05-01T03:15:00Z"
    assert set(manifest["databases"]) == set(ALL)
    assert manifest["databases"]["user.db"]["bytes"] == (made.folder / "user.db").stat().st_size
    # Nothing else was left in the backup directory: no partial folder.
    assert [p.name for p in (tmp_path / "backups").iterdir()] == ["20240501T031500Z"]


def test_a_backup_under_a_busy_writer_is_the_moment_it_began(db_dir: Path, tmp_path: Path) -> None:
    """A writer commits all along; the backup (in one-page steps, so it lasts) still finishes,
    and holds every user committed before it began and only a prefix of the later ones."""
    writer = UserStore.open(db_dir / "user.db")
    committed: list[str] = ["ann", "bob", "cid"]
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            handle = f"user{n}"
            writer.create_user(handle, (Role.Regular,))
            committed.append(handle)
            n += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        while len(committed) < 50:
            time.sleep(0.001)
        before = list(committed)
        made = make_backup(db_dir, tmp_path / "backups", T0, step_pages=1)
        written_during = len(committed) - len(before)
    finally:
        stop.set()
        thread.join()
        writer.db.close()
    assert made is not None
    copied = handles(made.folder / "user.db")
    assert copied[: len(before)] == before
    assert copied == committed[: len(copied)]  # a consistent snapshot: a prefix of the commits
    assert written_during > 0  # the writer was not held up by the backup
    assert all(check.problem is None for check in verify_backup(made.folder))


def test_two_backups_in_one_second_get_two_folders(db_dir: Path, tmp_path: Path) -> None:
    first = make_backup(db_dir, tmp_path / "b", T0)
    second = make_backup(db_dir, tmp_path / "b", T0)
    assert first is not None and second is not None
    assert [p.name for p in list_backups(tmp_path / "b")] == [
        "20240501T031500Z",
        "20240501T031500Z-1",
    ]


def test_a_stopped_backup_leaves_nothing_behind(db_dir: Path, tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    assert make_backup(db_dir, tmp_path / "b", T0, stop=stop, step_pages=1) is None
    assert list((tmp_path / "b").iterdir()) == []


def test_a_backup_of_an_empty_dir_or_into_a_file_says_so(db_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupError, match=r"no database found in .*empty"):
        make_backup(tmp_path / "empty", tmp_path / "b", T0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BackupError, match=r"cannot create .*file/b"):
        make_backup(db_dir, tmp_path / "file" / "b", T0)
    with pytest.raises(BackupError, match="is not a directory"):
        make_backup(db_dir, tmp_path / "file", T0)


def test_verify_finds_a_changed_a_broken_and_a_missing_copy(db_dir: Path, tmp_path: Path) -> None:
    made = make_backup(db_dir, tmp_path / "b", T0)
    assert made is not None
    assert all(check.problem is None for check in verify_backup(made.folder))

    # A byte changed inside a row: integrity_check cannot see it, the manifest's SHA-256 does.
    path = made.folder / "user.db"
    data = bytearray(path.read_bytes())
    at = data.rindex(b"bob")
    data[at : at + 3] = b"rob"
    path.write_bytes(bytes(data))
    (made.folder / "server.db").unlink()
    found = {check.name: check.problem for check in verify_backup(made.folder)}
    assert found["user.db"] is not None and "SHA-256" in found["user.db"]
    assert found["server.db"] == "missing"
    assert found["catalog.db"] is None

    # Without its manifest, a copy whose pages are broken fails its integrity check.
    (made.folder / MANIFEST).unlink()
    catalog = made.folder / "catalog.db"
    raw = bytearray(catalog.read_bytes())
    page = 4096
    raw[page : 3 * page] = b"\xff" * (2 * page)
    catalog.write_bytes(bytes(raw))
    found = {check.name: check.problem for check in verify_backup(made.folder)}
    assert found["catalog.db"] is not None
    assert "server.db" not in found  # without a manifest, only what is there is checked


def test_verify_refuses_what_is_no_backup(db_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="is not a directory"):
        verify_backup(tmp_path / "nowhere")
    make_backup(db_dir, tmp_path / "b", T0)
    with pytest.raises(BackupError, match=r"name one: .*20240501T031500Z"):
        verify_backup(tmp_path / "b")  # the folder of backups, not one backup
    (tmp_path / "b" / "20240501T031500Z" / MANIFEST).write_text("{not json")
    with pytest.raises(BackupError, match="cannot be read"):
        verify_backup(tmp_path / "b" / "20240501T031500Z")


def test_pruning_keeps_the_newest_and_touches_nothing_else(db_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "b"
    for hour in range(5):
        make_backup(db_dir, dest, T0 + timedelta(hours=hour))
    (dest / "notes.txt").write_text("mine")
    (dest / "photos").mkdir()
    fresh, old = dest / ".partial-20240502T000000Z", dest / ".partial-20240430T000000Z"
    fresh.mkdir()
    old.mkdir()
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))

    pruned = prune_backups(dest, keep=2)

    assert sorted(pruned) == sorted(
        [
            "20240501T031500Z",
            "20240501T041500Z",
            "20240501T051500Z",
            ".partial-20240430T000000Z",
        ]
    )
    assert sorted(p.name for p in dest.iterdir()) == [
        ".partial-20240502T000000Z",  # may be a backup being written right now
        "20240501T061500Z",
        "20240501T071500Z",
        "notes.txt",
        "photos",
    ]


def test_restore_into_a_fresh_dir_gives_the_backup(db_dir: Path, tmp_path: Path) -> None:
    made = make_backup(db_dir, tmp_path / "b", T0)
    assert made is not None
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    restored = restore_backup(made.folder, fresh, T0, holder="test")
    assert sorted(restored.databases) == ALL
    assert restored.set_aside is None
    assert handles(fresh / "user.db") == ["ann", "bob", "cid"]
    assert all(integrity(fresh / name) == ["ok"] for name in ALL)
    assert sorted(p.name for p in fresh.iterdir()) == sorted([*ALL, "pezzottify.lock"])
    # The stores open the restored files as the daemon will (WAL again, migrations current).
    store = UserStore.open(fresh / "user.db")
    assert store.handles() == ["ann", "bob", "cid"]
    store.db.close()
    DirLock.acquire(fresh, "next").release()  # the restore let go of the directory


def test_restore_sets_the_replaced_files_aside_with_their_wal(db_dir: Path, tmp_path: Path) -> None:
    made = make_backup(db_dir, tmp_path / "b", T0)
    assert made is not None
    later = UserStore.open(db_dir / "user.db")
    later.create_user("dan", (Role.Regular,))  # after the backup: in the WAL only
    assert (db_dir / "user.db-wal").exists()

    restored = restore_backup(made.folder, db_dir, T0 + timedelta(days=1), holder="test")
    later.db.close()

    aside = db_dir / "pre-restore-20240502T031500Z"
    assert restored.set_aside == aside
    assert "user.db-wal" in restored.moved
    # No stale WAL or shared-memory file beside a restored database.
    assert not any((db_dir / f"{name}{s}").exists() for name in ALL for s in ("-wal", "-shm"))
    assert handles(db_dir / "user.db") == ["ann", "bob", "cid"]
    # The replaced database kept its WAL, so nothing it held is lost.
    assert handles(aside / "user.db") == ["ann", "bob", "cid", "dan"]


def test_restore_refuses_while_the_directory_is_held(db_dir: Path, tmp_path: Path) -> None:
    made = make_backup(db_dir, tmp_path / "b", T0)
    assert made is not None
    with holding(db_dir, "pezzottify-server"):
        before = sorted(p.name for p in db_dir.iterdir())
        with pytest.raises(DirInUse, match=rf"in use by pezzottify-server \(pid {os.getpid()}\)"):
            restore_backup(made.folder, db_dir, T0, holder="test")
    assert sorted(p.name for p in db_dir.iterdir()) == before


def test_restore_refuses_a_damaged_backup_and_changes_nothing(db_dir: Path, tmp_path: Path) -> None:
    made = make_backup(db_dir, tmp_path / "b", T0)
    assert made is not None
    (made.folder / "catalog.db").write_bytes(b"not a database at all")
    before = sorted(p.name for p in db_dir.iterdir())
    with pytest.raises(BackupError, match=r"is damaged, nothing restored \(catalog.db: "):
        restore_backup(made.folder, db_dir, T0, holder="test")
    assert sorted(p.name for p in db_dir.iterdir()) == before


def test_the_directory_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    first = DirLock.acquire(tmp_path, "pezzottify-server")
    with pytest.raises(DirInUse, match=r"is in use by pezzottify-server \(pid \d+\)"):
        DirLock.acquire(tmp_path, "another")  # the same process is refused too (flock)
    first.release()
    DirLock.acquire(tmp_path, "another").release()
