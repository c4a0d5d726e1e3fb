"""A backup of a busy server, restored into a fresh data directory (SPEC §15, issue 21 part 3).

The daemon runs in-process (every actor, the HTTP listener on loopback) against the in-process
fake downloader; `pezzottify-admin` runs as a real process, as an operator would run it beside
the server. Eight writers request albums while the queue drains and the backup is taken; the
backup verifies; a restore onto the running server's files is refused; the server stops; the
backup is restored into a fresh db_dir (the media folder kept, as a media volume would be); a
server started on it has every request acknowledged before the backup began, finishes what was
in flight, and its databases pass `PRAGMA integrity_check`. A backup killed midway leaves no
folder that passes for a backup.
"""

from __future__ import annotations

import itertools
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
import trio

from fake_downloader import CatalogSpec, Knobs, build_catalog
from storage.backup import list_backups
from tests.reliability.invariants import check_integrity, check_safe, queue_items
from tests.support.live import daemon, fake, until
from tests.support.process import run_cli, script, wait_until

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

SPEC = CatalogSpec(
    seed=15, artists=8, albums_per_artist=6, tracks_per_album=2, audio_bytes=16 * 1024,
    image_bytes=2048,
)  # fmt: skip
ALBUMS = len(build_catalog(SPEC).album_ids)
WRITERS = 8
PACE_S = 0.25  # between two requests of one writer; one of the eight every 31 ms or so


async def admin(*args: str) -> tuple[int, str, str]:
    done = await trio.to_thread.run_sync(run_cli, "pezzottify-admin", list(args))
    return done.returncode, done.stdout, done.stderr


async def test_backup_while_busy_then_restore_into_a_fresh_db_dir(tmp_path: Path) -> None:
    live_dir, dest, fresh = tmp_path / "live", tmp_path / "backups", tmp_path / "fresh"
    live_dir.mkdir()
    fresh.mkdir()
    acknowledged: list[tuple[float, str]] = []  # (when the 201 arrived, album id)
    indexes = itertools.count()
    backup_done = trio.Event()

    async with fake(Knobs(), SPEC) as (url, _):
        async with daemon(live_dir, url, SPEC) as live:

            async def writer(offset: float) -> None:
                await trio.sleep(offset)  # the writers' requests spread over each pace
                while not backup_done.is_set() and (index := next(indexes)) < ALBUMS:
                    album = await live.request(index)
                    acknowledged.append((trio.current_time(), album))
                    await trio.sleep(PACE_S)

            async with trio.open_nursery() as nursery:
                for n in range(WRITERS):
                    nursery.start_soon(writer, n * PACE_S / WRITERS)
                await until(lambda: len(acknowledged) >= 2 * WRITERS, within=30)
                began = trio.current_time()
                status, out, err = await admin("--db-dir", str(live_dir), "backup", str(dest))
                backup_done.set()
            assert status == 0, err
            before = {album for at, album in acknowledged if at < began}
            requested = [album for _, album in acknowledged]
            assert len(before) < len(requested)  # the writers went on while it copied
            (folder,) = list_backups(dest)
            assert f"to {folder}" in out

            status, out, err = await admin("verify", str(folder))
            assert status == 0, out + err
            await live.wait_idle()

            status, _, err = await admin("--db-dir", str(live_dir), "restore", str(folder))
            assert status == 1
            assert "is in use by pezzottify-server" in err
            assert "stop the server before restoring" in err
            assert not list(live_dir.glob("pre-restore-*"))  # nothing was touched
            assert {i["content_id"] for i in queue_items(live_dir)} >= set(requested)

        status, out, err = await admin("--db-dir", str(fresh), "restore", str(folder))
        assert status == 0, err
        check_integrity(fresh)
        restored = {i["content_id"] for i in queue_items(fresh) if i["parent_id"] is None}
        assert before <= restored, f"lost: {before - restored}"
        for media in ("audio", "images"):  # the media volume outlives the databases
            shutil.copytree(live_dir / media, fresh / media)

        async with daemon(fresh, url, SPEC) as again:  # the restored admin signs in
            query: dict[str, str | int] = {"top_level_only": "true", "limit": 500}
            response = await again.http.get("/v1/download/admin/requests", params=query)
            assert response.status_code == 200
            listed = {item["content_id"] for item in response.json()["items"]}
            assert before <= listed
            await again.wait_idle()
            await trio.to_thread.run_sync(check_safe, fresh, SPEC, requested)
            items = queue_items(fresh)
            assert {i["status"] for i in items} == {"COMPLETED"}

    check_integrity(fresh)


def test_a_backup_killed_midway_leaves_no_backup_that_looks_whole(tmp_path: Path) -> None:
    db_dir, dest = tmp_path / "data", tmp_path / "backups"
    db_dir.mkdir()
    with sqlite3.connect(db_dir / "catalog.db") as conn:  # 60 MB: the copy takes a while
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE blobs (b BLOB)")
        conn.executemany("INSERT INTO blobs VALUES (zeroblob(4000))", [()] * 15_000)
    backup = subprocess.Popen(
        [*script("pezzottify-admin"), "--db-dir", str(db_dir), "backup", str(dest)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: dest.exists() and any(dest.iterdir()), timeout=20, interval=0.001)
        backup.send_signal(signal.SIGKILL)
    finally:
        backup.wait(10)
    assert backup.returncode == -signal.SIGKILL
    assert list_backups(dest) == []  # only a hidden partial folder, which no listing takes
    assert [p.name.startswith(".partial-") for p in dest.iterdir()] == [True]
    done = run_cli("pezzottify-admin", ["--db-dir", str(db_dir), "backup", str(dest)])
    assert done.returncode == 0, done.stderr
    (folder,) = list_backups(dest)
    assert run_cli("pezzottify-admin", ["verify", str(folder)]).returncode == 0
