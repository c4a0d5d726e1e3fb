"""The million-track benchmark at toy scale, and the library it builds and keeps."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import library, library_seed
from bench.common import Row, Stats
from bench.library_seed import LISTENER, Shape
from bench.seed import synthetic_bundles, synthetic_id
from daemon.config import DownloadManagerConfig
from storage.catalog import CatalogStore
from storage.db import Database
from storage.queue import MIGRATIONS, RequestStore, now

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

TOY = Shape(albums=30, tracks_per_album=4, artists=7, users=3, failed_albums=2, listener_requests=5)


def table_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: sorted(conn.execute(f"SELECT * FROM {n}")) for n in names}  # noqa: S608


def test_the_bulk_catalog_holds_what_ingestion_writes(tmp_path: Path) -> None:
    library_seed.seed_catalog(tmp_path / "bulk.db", TOY)
    store = CatalogStore.open(tmp_path / "ingested.db")
    store.ingest_many(synthetic_bundles(TOY.albums, TOY.tracks_per_album, artists=TOY.artists))
    store.set_tracks_audio([(synthetic_id("T", n), "flac") for n in range(TOY.tracks)])
    store.db.close()
    bulk = table_rows(tmp_path / "bulk.db")
    assert len(bulk["tracks"]) == TOY.tracks
    assert bulk == table_rows(tmp_path / "ingested.db")


def test_the_library_is_a_finished_history_with_every_file(tmp_path: Path) -> None:
    folder = library_seed.library(TOY, tmp_path)
    assert len(list((folder / "audio").iterdir())) == TOY.tracks
    assert len(list((folder / "images").iterdir())) == TOY.albums + TOY.artists
    db = Database(folder / "download_queue.db", MIGRATIONS)
    try:
        mine = RequestStore(db, DownloadManagerConfig()).my_requests_and_limits(
            LISTENER, None, 50, 0, now()
        )[0]
        with db.read() as conn:
            statuses = dict(conn.execute("SELECT status, COUNT(*) FROM queue_items GROUP BY 1"))
    finally:
        db.close()
    assert len(mine) == TOY.listener_requests
    for request in mine:
        assert request["status"] == "COMPLETED"
        assert request["progress"]["completed"] == TOY.tracks_per_album + 1  # and the cover
    assert statuses == {"COMPLETED": TOY.queue_items - TOY.failed_albums, "FAILED": 2}


def test_a_library_is_built_once_then_rebuilt_only_for_new_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = library_seed.library(TOY, tmp_path)
    built: list[Path] = []
    real_build = library_seed.build
    monkeypatch.setattr(
        library_seed, "build", lambda path, shape: built.append(path) or real_build(path, shape)
    )
    assert library_seed.library(TOY, tmp_path) == first
    assert built == []
    monkeypatch.setattr(library_seed, "FORMAT", library_seed.FORMAT + 1)
    second = library_seed.library(TOY, tmp_path)
    assert second != first and len(built) == 1
    assert first.exists()  # used a moment ago: maybe by a run of other code
    monkeypatch.setattr(library_seed, "FORMAT", library_seed.FORMAT + 1)
    hours_ago = time.time() - 2 * 3600
    os.utime(first / library_seed.COMPLETE, (hours_ago, hours_ago))
    third = library_seed.library(TOY, tmp_path)
    assert len(built) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([second.name, third.name])


@pytest.mark.slow
def test_million_at_toy_scale_reports_every_row(tmp_path: Path) -> None:
    rows = library.run(dataclasses.replace(library.SMOKE, cache=tmp_path))
    assert [r.benchmark for r in rows] == ["million"] * 5
    assert [r.measure.split(" ")[0] for r in rows] == ["time", "idle", "800-track", "GET", "GET"]
    for row in rows:
        assert 0 < row.ratio.low <= row.ratio.median <= row.ratio.high
        assert row.verdict in ("met", "**missed**")


def test_the_runner_finds_the_million_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_main, "DOC", tmp_path / "benchmarks.md")
    row = Row("million", "time to ready (s)", Stats(0.9, 0.8, 1.0, 3))
    monkeypatch.setattr("bench.library.run", lambda: [row])
    assert bench_main.main(["million"]) == 0
    assert "| million | time to ready (s) | 0.9 |" in (tmp_path / "benchmarks.md").read_text()
