"""The whole download flow against both shapes the downloader speaks (SPEC §12.1).

The fake downloader serves either the plan's JSON shapes or those of the service users actually
run; the daemon must take both, end to end: a search normalized to the plan's SearchResult, an
album, a discography, and a watchdog repair of files lost from disk. Each image listed by an
album or an artist, in either of its lists, is fetched exactly once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from fake_downloader import CatalogSpec, Knobs, audio_bytes, build_catalog, image_bytes
from fake_downloader.payloads import album_year
from tests.reliability.invariants import queue_items
from tests.support.live import Live, daemon, fake

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

SPEC = CatalogSpec(
    seed=12, artists=3, albums_per_artist=3, tracks_per_album=3, audio_bytes=24 * 1024,
    image_bytes=2048,
)  # fmt: skip
FAKE = build_catalog(SPEC)


def images_of(album: int, shapes: str) -> set[str]:
    """The images an album's download fetches: its covers and its artist's portraits."""
    artist = FAKE.album_artist(album)
    images = {FAKE.cover_ids[album], FAKE.portrait_ids[artist]}
    if shapes == "real":  # the real service lists a second, smaller image of each
        images |= {FAKE.small_cover_ids[album], FAKE.small_portrait_ids[artist]}
    return images


async def search(live: Live, q: str, kind: str) -> list[dict[str, Any]]:
    response = await live.http.get("/v1/download/search", params={"q": q, "type": kind})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def check_album_on_disk(db_dir: Path, album: int, shapes: str) -> None:
    for t in FAKE.album_tracks(album):
        track_id = FAKE.track_ids[t]
        path = db_dir / "audio" / f"{track_id}.flac"
        assert path.read_bytes() == audio_bytes(SPEC, track_id)
    for image_id in images_of(album, shapes):
        assert (db_dir / "images" / f"{image_id}.jpg").read_bytes() == image_bytes(SPEC, image_id)


def fetched_images(db_dir: Path, album: int) -> list[str]:
    """The images the album's download fetched, one entry per fetch."""
    items = queue_items(db_dir)
    (parent,) = [i["id"] for i in items if i["content_id"] == FAKE.album_ids[album]]
    kinds = ("ALBUM_IMAGE", "ARTIST_IMAGE")
    return [
        i["content_id"] for i in items if i["parent_id"] == parent and i["content_type"] in kinds
    ]


def stored_image_sizes(db_dir: Path) -> dict[str, Any]:
    with sqlite3.connect(db_dir / "catalog.db") as conn:
        return dict(conn.execute("SELECT id, size FROM images").fetchall())


async def run_watchdog(live: Live) -> None:
    response = await live.http.post("/v1/admin/jobs/integrity_watchdog/trigger")
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]

    async def finished() -> bool:
        job = (await live.http.get("/v1/admin/jobs/integrity_watchdog")).json()
        return not job["is_running"] and (job["last_run"] or {}).get("run_id") == run_id

    with trio.fail_after(20):
        while True:
            if await finished():
                return
            await trio.sleep(0.05)


@pytest.mark.parametrize("shapes", ["plan", "real"])
async def test_search_album_discography_and_repair_on_either_shape(
    tmp_path: Path, shapes: str
) -> None:
    async with fake(Knobs(shapes=shapes), SPEC) as (url, _), daemon(tmp_path, url, SPEC) as live:
        # Search: normalized to the plan's SearchResult, whatever the downloader's form.
        (hit,) = await search(live, FAKE.album_names[0], "album")
        assert hit == {
            "id": FAKE.album_ids[0], "type": "album", "name": FAKE.album_names[0],
            "artist_name": FAKE.artist_names[0],
            "image_url": f"/v1/download/image/{FAKE.cover_ids[0]}",
            "year": album_year(FAKE, 0), "in_catalog": False, "in_queue": False,
        }  # fmt: skip
        (artist_hit,) = await search(live, FAKE.artist_names[1], "artist")
        assert (artist_hit["id"], artist_hit["type"], artist_hit["name"]) == (
            FAKE.artist_ids[1], "artist", FAKE.artist_names[1],
        )  # fmt: skip
        assert artist_hit["image_url"] == f"/v1/download/image/{FAKE.portrait_ids[1]}"
        # The image a search names is reachable through the daemon, and nothing else is.
        cover = await live.http.get(hit["image_url"])
        assert cover.status_code == 200, cover.text
        assert cover.headers["content-type"] == "image/jpeg"
        assert cover.content == image_bytes(SPEC, FAKE.cover_ids[0])
        unknown = await live.http.get(f"/v1/download/image/{'0' * 40}")
        assert (unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")
        for probe in ("http://127.0.0.1:9/x", "..%2F..%2Fetc%2Fpasswd", "ABC"):
            refused = await live.http.get(f"/v1/download/image/{probe}")
            assert (refused.status_code, refused.json()["code"]) == (400, "INVALID_ID"), probe

        # An album, end to end: every track and image on disk, each image fetched once.
        await live.request(0)
        await live.wait_idle()
        check_album_on_disk(tmp_path, 0, shapes)
        assert sorted(fetched_images(tmp_path, 0)) == sorted(images_of(0, shapes))
        album = (await live.http.get(f"/v1/content/album/{FAKE.album_ids[0]}")).json()
        assert [t["id"] for t in album["tracks"]] == [
            FAKE.track_ids[t] for t in FAKE.album_tracks(0)
        ]
        assert all(t["audio_available"] for t in album["tracks"])

        # A discography: the artist's three albums, with every variant of the real shapes
        # (labels absent or empty, dates absent, images in one list or both).
        body = {"artist_id": FAKE.artist_ids[1], "artist_name": FAKE.artist_names[1]}
        response = await live.http.post("/v1/download/request/discography", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["albums_queued"] == 3
        await live.wait_idle()
        albums = list(FAKE.artist_albums(1))
        tops = {i["content_id"]: i["status"] for i in queue_items(tmp_path) if not i["parent_id"]}
        assert tops == dict.fromkeys([FAKE.album_ids[a] for a in [0, *albums]], "COMPLETED")
        for a in albums:
            check_album_on_disk(tmp_path, a, shapes)
            assert sorted(fetched_images(tmp_path, a)) == sorted(images_of(a, shapes))
        want = set().union(*(images_of(a, shapes) for a in [0, *albums]))
        sizes = stored_image_sizes(tmp_path)
        assert set(sizes) == want
        if shapes == "real":  # stored as given: size classes
            assert {sizes[FAKE.cover_ids[a]] for a in albums} == {"large"}
            assert {sizes[FAKE.small_cover_ids[a]] for a in albums} == {"small"}
        else:
            assert set(sizes.values()) == {str(SPEC.image_bytes)}

        # The watchdog repairs what went missing from disk.
        lost_track = FAKE.track_ids[FAKE.album_tracks(albums[1])[0]]
        lost_image = FAKE.cover_ids[albums[2]]
        (tmp_path / "audio" / f"{lost_track}.flac").unlink()
        (tmp_path / "images" / f"{lost_image}.jpg").unlink()
        await run_watchdog(live)
        await live.wait_idle()
        assert (tmp_path / "audio" / f"{lost_track}.flac").read_bytes() == audio_bytes(
            SPEC, lost_track
        )
        assert (tmp_path / "images" / f"{lost_image}.jpg").read_bytes() == image_bytes(
            SPEC, lost_image
        )
        repairs = [i for i in queue_items(tmp_path) if i["request_source"] == "WATCHDOG"]
        assert sorted((i["content_id"], i["status"]) for i in repairs) == sorted(
            [(lost_track, "COMPLETED"), (lost_image, "COMPLETED")]
        )
        assert live.restarts() == 0


async def test_the_real_shapes_label_date_and_disc_names_are_stored_plainly(
    tmp_path: Path,
) -> None:
    """Empty labels and disc names are stored as null, an absent date as null."""
    async with fake(Knobs(shapes="real"), SPEC) as (url, _), daemon(tmp_path, url, SPEC) as live:
        for album in (1, 2):  # 1: no label; 2: an empty label and no date
            await live.request(album)
        await live.wait_idle()
        one = (await live.http.get(f"/v1/content/album/{FAKE.album_ids[1]}")).json()
        two = (await live.http.get(f"/v1/content/album/{FAKE.album_ids[2]}")).json()
        assert (one["label"], two["label"], two["release_date"]) == (None, None, None)
        assert one["release_date"] is not None
        assert {d["name"] for d in one["discs"] + two["discs"]} == {None}
