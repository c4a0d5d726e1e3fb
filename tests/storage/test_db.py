"""The SQLite foundation: pragmas, migrations, immediate transactions, atomic files, ids."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.db import (
    Database,
    SchemaTooNew,
    connect,
    filesystem_type,
    warn_if_network_filesystem,
)
from storage.files import WRITE_BATCH_BYTES, MediaFile, MediaLayout
from storage.ids import InvalidId, content_id, image_id

MIGRATIONS = [
    ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"],
    ["ALTER TABLE t ADD COLUMN w INTEGER NOT NULL DEFAULT 0"],
]


def test_every_connection_has_the_pragmas(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.db", MIGRATIONS)
    with db.read() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db.close()


@pytest.mark.parametrize("fails", [False, True], ids=["committed", "rolled-back"])
def test_a_write_that_need_not_be_durable_relaxes_itself_only(tmp_path: Path, fails: bool) -> None:
    db = Database(tmp_path / "x.db", MIGRATIONS)
    with contextlib.suppress(RuntimeError), db.write(durable=False) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        conn.execute("INSERT INTO t (v) VALUES ('claim')")
        if fails:
            raise RuntimeError
    with db.write() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == (0 if fails else 1)
    db.close()


def test_a_write_that_need_not_be_durable_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    Database(path, MIGRATIONS).close()
    script = (
        "import os, signal, sys\n"
        "from storage.db import Database\n"
        "from tests.storage.test_db import MIGRATIONS\n"
        "db = Database(__import__('pathlib').Path(sys.argv[1]), MIGRATIONS)\n"
        "with db.write(durable=False) as conn:\n"
        "    conn.execute(\"INSERT INTO t (v) VALUES ('claim')\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], check=False, timeout=60)
    assert done.returncode == -signal.SIGKILL
    db = Database(path, MIGRATIONS)
    with db.read() as conn:
        assert [tuple(row) for row in conn.execute("SELECT v FROM t")] == [("claim",)]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_migrations_apply_in_order_and_once(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    Database(path, MIGRATIONS[:1]).close()
    db = Database(path, MIGRATIONS)
    with db.write() as conn:
        conn.execute("INSERT INTO t (v, w) VALUES ('a', 1)")
    with db.read() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
    Database(path, MIGRATIONS).close()  # nothing left to apply: no error


def test_newer_database_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    Database(path, MIGRATIONS).close()
    with pytest.raises(SchemaTooNew, match="newer than this server supports"):
        Database(path, MIGRATIONS[:1])


def test_failed_migration_leaves_the_old_schema(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    Database(path, MIGRATIONS[:1]).close()
    broken = [*MIGRATIONS[:1], ["ALTER TABLE t ADD COLUMN z INTEGER", "SELECT * FROM nope"]]
    with pytest.raises(Exception, match="nope"):
        Database(path, broken)
    conn = connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "z" not in [r[1] for r in conn.execute("PRAGMA table_info(t)")]
    conn.close()


def test_deferred_upgrade_fails_but_immediate_waits(tmp_path: Path) -> None:
    """Why every read-then-write uses BEGIN IMMEDIATE: a busy timeout does not save a deferred
    transaction that upgrades to a write while another connection writes."""
    db = Database(tmp_path / "x.db", MIGRATIONS)
    a, b = connect(db.path), connect(db.path)
    a.execute("BEGIN")
    a.execute("SELECT COUNT(*) FROM t").fetchone()
    b.execute("BEGIN IMMEDIATE")
    b.execute("INSERT INTO t (v) VALUES ('b')")
    b.execute("COMMIT")
    with pytest.raises(sqlite3.OperationalError, match=r"locked|busy"):
        a.execute("INSERT INTO t (v) VALUES ('a')")
    a.execute("ROLLBACK")
    # With BEGIN IMMEDIATE the second writer waits for the first and then succeeds.
    a.execute("BEGIN IMMEDIATE")
    done = threading.Event()

    def second() -> None:
        with db.write() as conn:
            conn.execute("INSERT INTO t (v) VALUES ('c')")
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    a.execute("INSERT INTO t (v) VALUES ('a')")
    a.execute("COMMIT")
    thread.join(10)
    assert done.is_set()
    with db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 3
    for conn in (a, b):
        conn.close()
    db.close()


async def test_a_media_file_is_published_whole_or_not_at_all(tmp_path: Path) -> None:
    media = MediaLayout(tmp_path)
    final = media.audio_path("A" * 22, "flac")
    published = MediaFile(media, final)
    for chunk in (b"ab", b"cd"):
        await published.write(chunk)
    await published.publish()
    assert final.read_bytes() == b"abcd"
    interrupted = MediaFile(media, media.audio_path("B" * 22, "flac"))
    await interrupted.write(b"x" * (WRITE_BATCH_BYTES + 1))  # a first batch is on disk
    assert [n for n in os.listdir(media.audio_dir) if n.endswith(".part")]
    await interrupted.discard()
    assert sorted(os.listdir(media.audio_dir)) == [final.name]


def test_sweep_removes_part_files_only(tmp_path: Path) -> None:
    media = MediaLayout(tmp_path)
    (media.audio_dir / "x.flac.1234.part").write_bytes(b"x")
    keep = media.audio_path("A" * 22, "flac")
    keep.write_bytes(b"y")
    assert media.sweep_partials() == 1
    assert os.listdir(media.audio_dir) == [keep.name]


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "..%2f..", "/abs", "a\x00b", "A" * 21, "A" * 23, "A" * 21 + "٣", ""],
)
def test_bad_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidId):
        content_id(bad)
    with pytest.raises(InvalidId):
        image_id(bad)


@settings(max_examples=300)
@given(st.text())
def test_any_id_is_rejected_or_stays_inside_the_media_root(value: str) -> None:
    root = Path("/media-root")
    layout = MediaLayout.__new__(MediaLayout)
    layout.root, layout.audio_dir, layout.images_dir = root, root / "audio", root / "images"
    for build in (lambda: layout.audio_path(value, "flac"), lambda: layout.image_path(value)):
        try:
            path = build()
        except ValueError:
            continue
        assert path.resolve().is_relative_to(root)


def test_a_database_on_a_network_filesystem_is_warned_about_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mounts = tmp_path / "mounts"
    data = tmp_path / "nas data"
    data.mkdir()
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        f"server:/export {str(data).replace(' ', chr(92) + '040')} nfs4 rw,relatime 0 0\n"
    )
    assert filesystem_type(data / "x.db", mounts) == "nfs4"
    with caplog.at_level(logging.WARNING, logger="pezzottify.storage"):
        assert warn_if_network_filesystem(data / "user.db", mounts)
    assert "nfs4" in caplog.text
    assert "local filesystem" in caplog.text
    local = tmp_path / "local"
    local.mkdir()
    assert not warn_if_network_filesystem(local / "user.db", mounts)
