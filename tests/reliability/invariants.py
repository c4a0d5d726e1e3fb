"""The reliability invariants, checked on the daemon's files: SQLite opened read-only, media listed.

`check_safe` holds at every instant, in particular right after a SIGKILL: databases pass
`PRAGMA integrity_check`; no duplicate top-level items, children, catalog rows or links; every
album's state agrees with its children's (Q-7); at most one terminal audit entry per item; every
file under a final name has exactly the bytes the fake serves (no final-named partial file); a
track marked available has its file. `check_settled` adds what must hold once the daemon is idle:
no item left PENDING, IN_PROGRESS or RETRY_WAITING, every requested album in the expected state,
no temporary file, and (for completed albums) the whole catalog and every file present.
The expected catalog is derived from the fake's own `Catalog` and byte generators.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fake_downloader import CatalogSpec, audio_bytes, build_catalog, image_bytes

PART = ".part"
TERMINAL = ("COMPLETED", "FAILED")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def rows(path: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with read_only(path) as conn:
        return [dict(row) for row in conn.execute(sql, params)]


def queue_items(db_dir: Path) -> list[dict[str, Any]]:
    return rows(db_dir / "download_queue.db", "SELECT * FROM queue_items ORDER BY seq")


def audit_entries(db_dir: Path) -> list[dict[str, Any]]:
    return rows(db_dir / "download_queue.db", "SELECT * FROM audit_log ORDER BY id")


def unsettled(db_dir: Path) -> int:
    return sum(item["status"] not in TERMINAL for item in queue_items(db_dir))


@dataclass(frozen=True)
class Expected:
    """What the catalog and the media folder hold once the given albums are downloaded."""

    tracks: dict[str, set[str]]  # album id -> its track ids
    artist: dict[str, str]  # album id -> its artist id
    cover: dict[str, str]  # album id -> its cover image id
    portrait: dict[str, str]  # artist id -> its portrait image id

    @classmethod
    def of(cls, spec: CatalogSpec, album_ids: Iterable[str]) -> Expected:
        fake = build_catalog(spec)
        tracks, artist, cover, portrait = {}, {}, {}, {}
        for album_id in album_ids:
            index = fake.album_index(album_id)
            assert index is not None, f"{album_id} is not one of the fake's albums"
            tracks[album_id] = {fake.track_ids[t] for t in fake.album_tracks(index)}
            owner = fake.album_artist(index)
            artist[album_id] = fake.artist_ids[owner]
            cover[album_id] = fake.cover_ids[index]
            portrait[fake.artist_ids[owner]] = fake.portrait_ids[owner]
        return cls(tracks, artist, cover, portrait)

    def children(self, album_id: str) -> set[tuple[str, str]]:
        return {
            *(("TRACK_AUDIO", t) for t in self.tracks[album_id]),
            ("ALBUM_IMAGE", self.cover[album_id]),
            ("ARTIST_IMAGE", self.portrait[self.artist[album_id]]),
        }

    def all_tracks(self) -> set[str]:
        return set().union(*self.tracks.values()) if self.tracks else set()

    def all_images(self) -> set[str]:
        return set(self.cover.values()) | set(self.portrait.values())


def check_integrity(db_dir: Path) -> None:
    for path in sorted(db_dir.glob("*.db")):
        with read_only(path) as conn:
            result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        assert result == ["ok"], f"{path.name}: {result}"


def media_files(db_dir: Path) -> dict[str, list[str]]:
    return {d: sorted(p.name for p in (db_dir / d).iterdir()) for d in ("audio", "images")}


def check_files(db_dir: Path, spec: CatalogSpec, want: Expected) -> None:
    """Every final-named file is one we expect, with exactly the fake's bytes."""
    tracks, images = want.all_tracks(), want.all_images()
    for name in media_files(db_dir)["audio"]:
        if name.endswith(PART):
            continue
        track, _, ext = name.partition(".")
        assert track in tracks and ext == "flac", f"unexpected audio file {name}"
        data = (db_dir / "audio" / name).read_bytes()
        assert data == audio_bytes(spec, track), f"audio/{name}: {len(data)} bytes, not the fake's"
    for name in media_files(db_dir)["images"]:
        if name.endswith(PART):
            continue
        image, _, ext = name.partition(".")
        assert image in images and ext == "jpg", f"unexpected image file {name}"
        data = (db_dir / "images" / name).read_bytes()
        assert data == image_bytes(spec, image), f"images/{name} is not the fake's image"


def check_queue(db_dir: Path, want: Expected) -> list[dict[str, Any]]:
    items = queue_items(db_dir)
    top = [i for i in items if i["parent_id"] is None]
    repeated = [k for k, n in Counter(i["content_id"] for i in top).items() if n > 1]
    assert not repeated, f"albums queued twice: {repeated}"
    for album in top:
        # Nothing is deleted from the media folder here: a watchdog repair would be spurious.
        assert album["content_type"] == "ALBUM", f"unexpected top-level item {dict(album)}"
        kids = [i for i in items if i["parent_id"] == album["id"]]
        keys = Counter((k["content_type"], k["content_id"]) for k in kids)
        assert all(n == 1 for n in keys.values()), f"duplicate children: {keys}"
        expected = want.children(album["content_id"])
        assert set(keys) <= expected, f"unexpected children {set(keys) - expected}"
        if album["children_created"]:
            assert set(keys) == expected, f"missing children {expected - set(keys)}"
        check_parent(album, kids)
    check_audit(db_dir, items)
    return items


def check_parent(album: dict[str, Any], kids: list[dict[str, Any]]) -> None:
    states = Counter(k["status"] for k in kids)
    label = f"album {album['content_id']} is {album['status']} with children {dict(states)}"
    if album["status"] == "COMPLETED":
        assert states == Counter({"COMPLETED": len(kids)}), label
        assert album["bytes_downloaded"] == sum(k["bytes_downloaded"] for k in kids), label
    elif album["status"] == "FAILED" and kids:
        assert states["FAILED"] >= 1 and sum(states[s] for s in TERMINAL) == len(kids), label
    elif kids:  # an unfinished album always has unfinished children (settled in one commit)
        assert sum(states[s] for s in TERMINAL) < len(kids), label


def check_audit(db_dir: Path, items: list[dict[str, Any]]) -> None:
    ends = Counter(
        (e["queue_item_id"], e["event_type"])
        for e in audit_entries(db_dir)
        if e["event_type"] in ("DOWNLOAD_COMPLETED", "DOWNLOAD_FAILED")
    )
    for item in items:
        done = ends[(item["id"], "DOWNLOAD_COMPLETED")]
        failed = ends[(item["id"], "DOWNLOAD_FAILED")]
        assert done == (item["status"] == "COMPLETED"), f"{done} completions for {item}"
        assert failed == (item["status"] == "FAILED"), f"{failed} failures for {item}"


def check_catalog(db_dir: Path, spec: CatalogSpec, want: Expected) -> dict[str, set[str]]:
    """The catalog holds whole requested albums only, each row and link once; a track marked
    available has its file. Returns the album -> tracks map found."""
    db = db_dir / "catalog.db"
    albums = {r["id"] for r in rows(db, "SELECT id FROM albums")}
    assert albums <= set(want.tracks), f"albums nobody requested: {albums - set(want.tracks)}"
    found: dict[str, set[str]] = {a: set() for a in albums}
    for track in rows(db, "SELECT id, album_id, audio_format FROM tracks"):
        found[track["album_id"]].add(track["id"])
        if track["audio_format"] is not None:
            assert track["audio_format"] == "flac", track
            path = db_dir / "audio" / f"{track['id']}.flac"
            assert path.exists(), f"track {track['id']} is marked available but has no file"
    assert found == {a: want.tracks[a] for a in albums}, "tracks differ from the albums'"
    links = rows(db, "SELECT album_id, artist_id FROM album_artists")
    assert sorted((r["album_id"], r["artist_id"]) for r in links) == sorted(
        (a, want.artist[a]) for a in albums
    )
    covers = rows(db, "SELECT album_id, image_id FROM album_images")
    assert sorted((r["album_id"], r["image_id"]) for r in covers) == sorted(
        (a, want.cover[a]) for a in albums
    )
    track_links = rows(db, "SELECT track_id, artist_id FROM track_artists")
    assert len(track_links) == sum(len(t) for t in found.values())
    artists = {r["id"] for r in rows(db, "SELECT id FROM artists")}
    assert artists == {want.artist[a] for a in albums}
    portraits = rows(db, "SELECT artist_id, image_id FROM artist_images")
    assert sorted((r["artist_id"], r["image_id"]) for r in portraits) == sorted(
        (a, want.portrait[a]) for a in artists
    )
    return found


def check_safe(db_dir: Path, spec: CatalogSpec, album_ids: Iterable[str]) -> None:
    """What holds at any instant, whatever killed the daemon and when."""
    want = Expected.of(spec, album_ids)
    check_integrity(db_dir)
    items = check_queue(db_dir, want)
    check_catalog(db_dir, spec, want)
    check_files(db_dir, spec, want)
    for item in items:
        if item["status"] != "COMPLETED" or item["parent_id"] is None:
            continue
        folder, ext = (
            ("audio", "flac") if item["content_type"] == "TRACK_AUDIO" else ("images", "jpg")
        )
        path = db_dir / folder / f"{item['content_id']}.{ext}"
        assert path.exists(), f"completed {item['content_type']} without its file {path.name}"


def check_settled(
    db_dir: Path, spec: CatalogSpec, album_ids: Iterable[str], expect: str = "COMPLETED"
) -> list[dict[str, Any]]:
    """What holds once the daemon is idle; returns the queue items."""
    album_ids = list(album_ids)
    check_safe(db_dir, spec, album_ids)
    items = queue_items(db_dir)
    stuck = [(i["content_type"], i["status"]) for i in items if i["status"] not in TERMINAL]
    assert not stuck, f"items left unfinished: {stuck}"
    top = {i["content_id"]: i["status"] for i in items if i["parent_id"] is None}
    assert top == dict.fromkeys(album_ids, expect), f"albums: {top}"
    files = media_files(db_dir)
    leftovers = [n for names in files.values() for n in names if n.endswith(PART)]
    assert not leftovers, f"temporary files left: {leftovers}"
    if expect == "COMPLETED":
        want = Expected.of(spec, album_ids)
        assert files["audio"] == sorted(f"{t}.flac" for t in want.all_tracks())
        assert files["images"] == sorted(f"{i}.jpg" for i in want.all_images())
        assert set(check_catalog(db_dir, spec, want)) == set(album_ids)
    return items
