"""Content routes (SPEC §5): metadata JSON, image and audio files, ranges, ids, auth, caching."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from api.app import create_app
from bench.seed import synthetic_bundles, synthetic_id
from daemon.config import Config
from daemon.root import Root
from daemon.services import close_root
from storage import files
from storage.catalog import AlbumBundle, AlbumRecord, DiscRecord, TrackRecord
from storage.queue import ContentType, ErrorType
from tests.conftest import login, make_user, open_test_root
from tests.support.openapi import assert_documented
from tests.support.queue_rows import BASE, insert

AUDIO = bytes(range(256)) * 40  # 10,240 distinct-ish bytes, so a wrong offset shows
COVER_BYTES = b"\xff\xd8\xff\xe0" + b"jpeg" * 100
UNKNOWN = "Z" * 22
ROUTES = ("artist", "album", "track", "image", "stream")


@pytest.fixture
def seeded(root: Root) -> dict[str, str]:
    """One album of three tracks; the first has its audio on disk, the second a row but no file."""
    bundle = next(synthetic_bundles(1, 3))
    root.catalog.ingest_many([bundle])
    first, second = bundle.tracks[0].id, bundle.tracks[1].id
    root.catalog.set_track_audio(first, "flac")
    root.catalog.set_track_audio(second, "mp3")
    root.media.audio_path(first, "flac").write_bytes(AUDIO)
    cover = bundle.album.image_ids[0]
    root.media.image_path(cover).write_bytes(COVER_BYTES)
    return {
        "album": bundle.album.id,
        "artist": bundle.artists[0].id,
        "track": first,
        "track_without_file": second,
        "track_without_audio": bundle.tracks[2].id,
        "image": cover,
        "image_without_file": bundle.artists[0].image_ids[0],
    }


async def get(client: Any, path: str, headers: dict[str, str], **extra: str) -> Any:
    return await client.get(path, headers={**headers, **extra})


async def test_metadata_routes_answer_the_spec_shapes(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str]
) -> None:
    r = await get(client, f"/v1/content/artist/{seeded['artist']}", user_headers)
    assert r.status_code == 200
    assert await r.get_json() == {
        "id": seeded["artist"], "name": "Artist 0", "genres": ["synthetic"],
        "image_ids": [seeded["image_without_file"]], "album_ids": [seeded["album"]],
    }  # fmt: skip

    r = await get(client, f"/v1/content/album/{seeded['album']}", user_headers)
    assert r.status_code == 200
    album = await r.get_json()
    assert set(album) == {
        "id", "name", "album_type", "label", "release_date", "genres", "artist_ids",
        "image_ids", "discs", "tracks", "artists",
    }  # fmt: skip
    assert album["discs"][0]["track_ids"] == [t["id"] for t in album["tracks"]]
    assert [a["id"] for a in album["artists"]] == [seeded["artist"]]
    assert [t["audio_format"] for t in album["tracks"]] == ["flac", "mp3", None]
    # Without the download manager nothing is ever given up on: the catalog alone decides.
    assert [t["availability"] for t in album["tracks"]] == ["available", "available", "missing"]

    r = await get(client, f"/v1/content/track/{seeded['track']}", user_headers)
    assert r.status_code == 200
    assert await r.get_json() == {
        "id": seeded["track"], "name": "Track 0.1", "album_id": seeded["album"],
        "artist_ids": [seeded["artist"]], "number": 1, "disc_number": 1, "duration_ms": 180_000,
        "is_explicit": False, "audio_available": True, "audio_format": "flac",
        "availability": "available",
    }  # fmt: skip


async def test_metadata_read_again_follows_every_catalog_change(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str], root: Root
) -> None:
    """Read again, an album shows each change to the catalog at once."""
    path = f"/v1/content/album/{seeded['album']}"
    first = await (await get(client, path, user_headers)).get_json()
    assert await (await get(client, path, user_headers)).get_json() == first
    assert [t["audio_format"] for t in first["tracks"]] == ["flac", "mp3", None]
    root.catalog.set_track_audio(seeded["track_without_audio"], "ogg")  # a download landed
    again = await (await get(client, path, user_headers)).get_json()
    assert [t["audio_format"] for t in again["tracks"]] == ["flac", "mp3", "ogg"]
    unknown = f"/v1/content/album/{UNKNOWN}"
    assert (await get(client, unknown, user_headers)).status_code == 404
    assert (await get(client, unknown, user_headers)).status_code == 404


def availabilities(body: dict[str, Any]) -> Any:
    """The `availability` of a track's JSON, or those of an album's tracks."""
    return [t["availability"] for t in body["tracks"]] if "tracks" in body else body["availability"]


@pytest.fixture
def with_downloads(tmp_path: Path) -> Iterator[Root]:
    """A root with the download manager on (its own databases under tmp_path/dm)."""
    (tmp_path / "dm").mkdir()
    config = Config(db_dir=tmp_path / "dm", media_path=tmp_path / "dm", downloader_url="http://x")
    root = open_test_root(config)
    yield root
    close_root(root)


def give_up_on(root: Root, track: str) -> str:
    """A watchdog repair of the track's audio that failed not_found: the track is marked."""
    item = insert(
        root.downloads.queue_admin.db, status="IN_PROGRESS", priority=1, content_type="TRACK_AUDIO",
        content_id=track, request_source="WATCHDOG",
    )  # fmt: skip
    root.downloads.queue.fail(item, ErrorType.NOT_FOUND, "no audio", BASE)
    return item


async def test_tracks_the_watchdog_gave_up_on_are_unavailable_at_once(
    with_downloads: Root, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = with_downloads
    bundle = next(synthetic_bundles(1, 3))
    root.catalog.ingest_many([bundle])
    first, second, third = (t.id for t in bundle.tracks)
    root.catalog.set_track_audio(first, "flac")
    root.catalog.set_track_audio(second, "mp3")  # recorded, but its file was lost
    lookups: list[list[str]] = []
    among = root.downloads.queue_admin.unavailable_among

    def counted(content_type: ContentType, ids: list[str]) -> set[str]:
        lookups.append(list(ids))
        return among(content_type, ids)

    monkeypatch.setattr(root.downloads.queue_admin, "unavailable_among", counted)
    make_user(root, "regular")
    async with create_app(root).test_app() as app:
        client = app.test_client()
        headers = await login(client, "regular")

        async def availability(kind: str, ident: str) -> Any:
            r = await get(client, f"/v1/content/{kind}/{ident}", headers)
            assert r.status_code == 200
            return availabilities(await r.get_json())

        album = bundle.album.id
        assert await availability("album", album) == ["available", "available", "missing"]
        assert lookups == [[first, second, third]]  # one statement for the album's tracks
        assert await availability("album", album) == ["available", "available", "missing"]
        assert lookups == [[first, second, third]] * 2  # and one again when read again
        repairs = {track: give_up_on(root, track) for track in (second, third)}
        assert await availability("album", album) == ["available", "unavailable", "unavailable"]
        assert await availability("track", third) == "unavailable"
        root.downloads.queue_admin.admin_retry(repairs[third], "root", BASE + 60)
        assert await availability("track", third) == "missing"
        assert await availability("album", album) == ["available", "unavailable", "missing"]
        assert await availability("track", first) == "available"


def sparse_album(root: Root, artist: str) -> str:
    """An album the downloader told little about: no type, label or release date, a named disc,
    a featured artist the catalog does not hold; no track has audio. Its id."""
    album, (first, second) = synthetic_id("L", 50), (synthetic_id("T", 500), synthetic_id("T", 501))
    discs = (DiscRecord(1, "Bonus", (first, second)),)
    record = AlbumRecord(album, "Sparse", None, None, None, (), (artist,), (), discs)
    tracks = [
        TrackRecord(first, "One", album, (artist, UNKNOWN), 1, 1, 1000, True),
        TrackRecord(second, "Two", album, (), 2, 1, 2000, False),
    ]
    root.catalog.ingest_many([AlbumBundle(record, tracks)])
    return album


async def test_answers_are_as_the_document_says(with_downloads: Root) -> None:
    """Albums with and without their optional fields, tracks available, missing and given up
    on: each answer is valid against its route's schema in /openapi.json."""
    root = with_downloads
    bundle = next(synthetic_bundles(1, 3))
    artist, (first, second, third) = bundle.artists[0].id, (t.id for t in bundle.tracks)
    root.catalog.ingest_many([bundle])
    root.catalog.set_track_audio(first, "flac")
    give_up_on(root, third)
    sparse = sparse_album(root, artist)
    make_user(root, "regular")
    async with create_app(root).test_app() as app:
        client = app.test_client()
        headers = await login(client, "regular")

        async def check(kind: str, ident: str) -> Any:
            r = await get(client, f"/v1/content/{kind}/{ident}", headers)
            assert r.status_code == 200
            answer = await r.get_json()
            await assert_documented(client, "GET", f"/v1/content/{kind}/{{{kind}_id}}", 200, answer)
            return answer

        full = await check("album", bundle.album.id)
        assert availabilities(full) == ["available", "missing", "unavailable"]
        assert full["discs"][0]["name"] is None
        bare = await check("album", sparse)
        assert (bare["album_type"], bare["label"], bare["release_date"]) == (None, None, None)
        assert bare["discs"][0]["name"] == "Bonus"
        assert [a["id"] for a in bare["artists"]] == [artist]
        for track in (first, second, third):
            await check("track", track)
        assert (await check("artist", artist))["album_ids"] == [bundle.album.id, sparse]


async def test_image_route_serves_the_file(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str]
) -> None:
    r = await get(client, f"/v1/content/image/{seeded['image']}", user_headers)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "image/jpeg"
    assert await r.get_data() == COVER_BYTES


@pytest.mark.parametrize("route", ROUTES)
async def test_successful_responses_carry_cache_control(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str], route: str
) -> None:
    key = {"stream": "track"}.get(route, route)
    r = await get(client, f"/v1/content/{route}/{seeded[key]}", user_headers)
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "max-age=3600"


@pytest.mark.parametrize(
    ("route", "key"),
    [
        ("artist", None), ("album", None), ("track", None), ("stream", None),
        ("image", None), ("image", "image_without_file"),
        ("stream", "track_without_file"), ("stream", "track_without_audio"),
    ],
)  # fmt: skip
async def test_unknown_or_absent_content_is_404(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str], route: str, key: str | None
) -> None:
    target = seeded[key] if key else ("e" * 40 if route == "image" else UNKNOWN)
    r = await get(client, f"/v1/content/{route}/{target}", user_headers)
    assert r.status_code == 404
    assert (await r.get_json())["code"] == "NOT_FOUND"
    assert "Cache-Control" not in r.headers


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "bad",
    [
        "..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "A" * 21, "A" * 23, "٣" * 22, "A" * 21 + "-",
        "a" * 39, "E" * 40, "%00" + "a" * 39,
    ],
)  # fmt: skip
async def test_malformed_ids_are_400(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str], route: str, bad: str
) -> None:
    path = f"/v1/content/{route}/{bad if '%' in bad or '/' in bad else quote(bad)}"
    r = await get(client, path, user_headers)
    assert r.status_code == 400, path
    body = await r.get_json()
    # A NUL is refused as bad text (SPEC §11) before the id is looked at.
    assert body["code"] == ("INVALID_TEXT" if "%00" in bad else "INVALID_ID")
    assert body["error"]


@pytest.mark.parametrize("route", ROUTES)
async def test_anonymous_is_401_before_the_id_is_looked_at(
    client: Any, seeded: dict[str, str], route: str
) -> None:
    for target in (seeded["track"], "../../etc/passwd"):
        r = await client.get(f"/v1/content/{route}/{target}")
        assert r.status_code == 401
        assert (await r.get_json())["code"] == "UNAUTHORIZED"


async def test_stream_whole_file_advertises_ranges(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str]
) -> None:
    r = await get(client, f"/v1/content/stream/{seeded['track']}", user_headers)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "audio/flac"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert int(r.headers["Content-Length"]) == len(AUDIO)
    assert await r.get_data() == AUDIO


@pytest.mark.parametrize(
    ("header", "begin", "end"),
    [
        ("bytes=0-99", 0, 100),  # first bytes
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=10000-", 10000, len(AUDIO)),  # open-ended
        ("bytes=-240", len(AUDIO) - 240, len(AUDIO)),  # suffix
        ("bytes=-999999", 0, len(AUDIO)),  # suffix longer than the file
        ("bytes=10200-999999", 10200, len(AUDIO)),  # end clamped
    ],
)
async def test_stream_ranges_are_206(
    client: Any,
    user_headers: dict[str, str],
    seeded: dict[str, str],
    header: str,
    begin: int,
    end: int,
) -> None:
    r = await get(client, f"/v1/content/stream/{seeded['track']}", user_headers, Range=header)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {begin}-{end - 1}/{len(AUDIO)}"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["Cache-Control"] == "max-age=3600"
    assert int(r.headers["Content-Length"]) == end - begin
    assert await r.get_data() == AUDIO[begin:end]


@pytest.mark.parametrize("header", [f"bytes={len(AUDIO)}-", "bytes=999999-1000000", "bytes=-0"])
async def test_unsatisfiable_range_is_416(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str], header: str
) -> None:
    r = await get(client, f"/v1/content/stream/{seeded['track']}", user_headers, Range=header)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(AUDIO)}"
    assert (await r.get_json())["code"] == "RANGE_NOT_SATISFIABLE"


@pytest.mark.parametrize(
    "header", ["items=0-10", "bytes=5-2", "bytes=0-1,5-6", "bytes=abc", "bytes=-", "bytes=٣-"]
)
async def test_ranges_we_do_not_honour_get_the_whole_file(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str], header: str
) -> None:
    r = await get(client, f"/v1/content/stream/{seeded['track']}", user_headers, Range=header)
    assert r.status_code == 200
    assert await r.get_data() == AUDIO


async def test_if_range_falls_back_to_the_whole_file(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str]
) -> None:
    r = await client.get(
        f"/v1/content/stream/{seeded['track']}",
        headers={**user_headers, "Range": "bytes=0-9", "If-Range": '"some-etag"'},
    )
    assert r.status_code == 200
    assert await r.get_data() == AUDIO


async def test_any_text_id_is_400_or_404_never_500(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str]
) -> None:
    """Hypothesis drives examples from a worker thread; each request hops back onto this test's
    event loop, where the client and its app live."""
    answers: list[int] = []

    async def fetch(route: str, raw: str) -> None:
        r = await client.get(f"/v1/content/{route}/{quote(raw, safe='')}", headers=user_headers)
        assert r.status_code in (400, 404), (route, raw, r.status_code)
        assert (await r.get_json())["code"] in ("INVALID_ID", "INVALID_TEXT", "NOT_FOUND")
        answers.append(r.status_code)

    @settings(max_examples=100, deadline=None, database=None)
    @given(route=st.sampled_from(ROUTES), raw=st.text(max_size=60))
    def property_holds(route: str, raw: str) -> None:
        trio.from_thread.run(fetch, route, raw)

    await trio.to_thread.run_sync(property_holds)
    assert len(answers) >= 50


@pytest.fixture
def long_track(root: Root, seeded: dict[str, str]) -> bytes:
    """The seeded track's audio replaced by 2.5 pieces' worth of bytes that differ everywhere."""
    piece = files.READ_PIECE_BYTES
    audio = b"".join(n.to_bytes(4, "big") for n in range(piece * 5 // 8))
    root.media.audio_path(seeded["track"], "flac").write_bytes(audio)
    return audio


@pytest.mark.parametrize(
    ("header", "span"),
    [
        (None, (0, None)),  # the whole file: three reads
        ("bytes=1000-", (1000, None)),
        ("bytes=1048570-1048579", (1048570, 1048580)),  # across the first boundary
        ("bytes=2-2097153", (2, 2097154)),  # 2 MiB from an odd offset
        ("bytes=-5", (-5, None)),
    ],
)
async def test_long_files_and_ranges_are_sent_whole_in_pieces(
    client: Any,
    user_headers: dict[str, str],
    seeded: dict[str, str],
    long_track: bytes,
    header: str | None,
    span: tuple[int, int | None],
) -> None:
    extra = {"Range": header} if header else {}
    r = await get(client, f"/v1/content/stream/{seeded['track']}", user_headers, **extra)
    expected = long_track[span[0] : span[1]]
    assert r.status_code == (206 if header else 200)
    assert int(r.headers["Content-Length"]) == len(expected)
    assert await r.get_data() == expected


async def test_empty_file_is_an_empty_body(
    client: Any, user_headers: dict[str, str], seeded: dict[str, str], root: Root
) -> None:
    root.media.audio_path(seeded["track"], "flac").write_bytes(b"")
    r = await get(client, f"/v1/content/stream/{seeded['track']}", user_headers)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "0"
    assert await r.get_data() == b""
    r = await get(client, f"/v1/content/stream/{seeded['track']}", user_headers, Range="bytes=0-")
    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */0"
