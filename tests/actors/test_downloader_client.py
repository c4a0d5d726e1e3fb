"""The downloader client against `httpx.MockTransport` (and the fake downloader over loopback for
stalls and hostile bodies): the error table of SPEC §8.6, the JSON shapes of SPEC §12, whole-
request deadlines, and streamed downloads (`receive_media`) that publish only complete files."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.download_steps import Saved, receive_media
from actors.downloader import DownloaderClient
from actors.failures import (
    DownloaderBadRequest,
    DownloaderConnectionError,
    DownloaderError,
    DownloaderNotFound,
    DownloaderParseError,
    DownloaderRateLimited,
    DownloaderTimeout,
    StorageFailure,
)
from fake_downloader import CatalogSpec, Knobs, audio_bytes, open_fake_downloader
from storage import files
from storage.offload import Offload
from storage.queue import ErrorType

BASE = "http://downloader.test"
ALBUM = "A" * 22
ARTIST = "B" * 22
TRACK = "C" * 22
COVER = "c" * 40
PORTRAIT = "d" * 40
Handler = Callable[[httpx.Request], Any]


def client_for(handler: Handler, timeout: float = 5.0) -> DownloaderClient:
    return DownloaderClient(BASE, timeout, transport=httpx.MockTransport(handler))


def answer(*args: Any, **kwargs: Any) -> Handler:
    return lambda request: httpx.Response(*args, **kwargs)


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def image(ident: str) -> dict[str, Any]:
    return {"id": ident, "size": 10, "width": 64, "height": 64}


ALBUM_DOC = {
    "id": ALBUM, "name": "Blue", "album_type": "album", "artists_ids": [ARTIST],
    "label": "L", "date": -10_000, "genre": ["jazz"], "covers": [image(COVER)],
    "discs": [{"number": 1, "name": None, "tracks": [TRACK]}], "popularity": 99,
}  # fmt: skip
TRACK_DOC = {
    "id": TRACK, "name": "One", "album_id": ALBUM, "artists_ids": [ARTIST], "number": 1,
    "disc_number": 1, "duration": 1234, "is_explicit": True, "isrc": "ignored",
}  # fmt: skip


# -- the error table -----------------------------------------------------------------------------

ERROR_ROWS = [
    (answer(404, json={"error": "not found", "code": "NOT_FOUND", "message": "no album"}),
     DownloaderNotFound, ErrorType.NOT_FOUND),
    (answer(400, json={"error": "bad"}), DownloaderBadRequest, ErrorType.BAD_REQUEST),
    (answer(403), DownloaderBadRequest, ErrorType.BAD_REQUEST),
    (answer(429), DownloaderRateLimited, ErrorType.RATE_LIMITED),
    (answer(500), DownloaderConnectionError, ErrorType.CONNECTION),
    (answer(502), DownloaderConnectionError, ErrorType.CONNECTION),
    (answer(503, json={"code": "SERVICE_UNAVAILABLE"}), DownloaderConnectionError,
     ErrorType.CONNECTION),
    (answer(504), DownloaderTimeout, ErrorType.TIMEOUT),
    (raising(httpx.ConnectError("Connection refused")), DownloaderConnectionError,
     ErrorType.CONNECTION),
    (raising(httpx.ReadError("Connection reset by peer")), DownloaderConnectionError,
     ErrorType.CONNECTION),
    (raising(httpx.ConnectTimeout("slow")), DownloaderTimeout, ErrorType.TIMEOUT),
    (raising(httpx.ReadTimeout("slow")), DownloaderTimeout, ErrorType.TIMEOUT),
    (answer(200, content=b"{not json"), DownloaderParseError, ErrorType.PARSE),
    (answer(200, json={"id": ALBUM}), DownloaderParseError, ErrorType.PARSE),
    (answer(200, content=b"[" * 100_000 + b"]" * 100_000), DownloaderParseError, ErrorType.PARSE),
    (answer(200, json={**ALBUM_DOC, "artists_ids": ["../../etc"]}), DownloaderParseError,
     ErrorType.PARSE),
    (answer(200, json={**ALBUM_DOC, "id": ARTIST}), DownloaderParseError, ErrorType.PARSE),
    # Numbers SQLite cannot store: the catalog's transaction would raise, and the processor.
    (answer(200, json={**ALBUM_DOC, "date": 2**63}), DownloaderParseError, ErrorType.PARSE),
    (answer(200, json={**ALBUM_DOC, "covers": [{**image(COVER), "size": 2**64}]}),
     DownloaderParseError, ErrorType.PARSE),
    (answer(200, json={**ALBUM_DOC, "covers": [image("XYZ")]}), DownloaderParseError,
     ErrorType.PARSE),
    (answer(302, headers={"location": "/elsewhere"}), DownloaderError, ErrorType.UNKNOWN),
]  # fmt: skip


@pytest.mark.parametrize(("handler", "kind", "error_type"), ERROR_ROWS)
async def test_every_failure_maps_to_its_error_type(
    handler: Handler, kind: type[DownloaderError], error_type: ErrorType
) -> None:
    client = client_for(handler)
    with pytest.raises(kind) as caught:
        await client.album(ALBUM)
    assert type(caught.value) is kind
    assert caught.value.error_type is error_type
    assert caught.value.message
    await client.aclose()


async def test_error_messages_carry_the_status_and_the_downloaders_words() -> None:
    client = client_for(answer(404, json={"error": "nf", "message": "unknown album X"}))
    with pytest.raises(DownloaderNotFound) as caught:
        await client.album(ALBUM)
    assert caught.value.status == 404
    assert "404" in caught.value.message and "unknown album X" in caught.value.message


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, 5.0), ("30", 30.0), ("soon", 5.0), ("inf", 5.0), ("nan", 5.0), ("1e300", 5.0),
     ("-3", 5.0)],
)  # fmt: skip
async def test_rate_limited_honours_retry_after(header: str | None, expected: float) -> None:
    headers = {"retry-after": header} if header is not None else {}
    client = client_for(answer(429, headers=headers, json={"code": "TOO_MANY_REQUESTS"}))
    with pytest.raises(DownloaderRateLimited) as caught:
        await client.artist(ARTIST)
    assert caught.value.retry_after == expected


async def test_a_bad_id_is_refused_before_any_request() -> None:
    calls: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={})

    client = client_for(record)
    with pytest.raises(DownloaderBadRequest):
        await client.album("../../../etc/passwd")
    assert calls == []


async def test_json_calls_are_bounded_by_the_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def stalled(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1000)
        return httpx.Response(200, json=[])

    client = client_for(stalled, timeout=30)
    start = trio.current_time()
    with pytest.raises(DownloaderTimeout):
        await client.search("blue", "album")
    assert trio.current_time() - start == pytest.approx(30)


async def test_an_albums_call_is_bounded_by_the_timeout_as_a_whole(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A trickle that keeps each read within the read timeout still ends at the timeout."""

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"id": "'
        for _ in range(400):
            await trio.sleep(0.01)
            yield b"A"

    client = client_for(lambda request: httpx.Response(200, content=trickle()), timeout=0.5)
    start = trio.current_time()
    with pytest.raises(DownloaderTimeout, match=r"longer than 0\.5 s"):
        await client.album(ALBUM)
    assert trio.current_time() - start == pytest.approx(0.5)


# -- JSON shapes ---------------------------------------------------------------------------------


async def test_album_tracks_and_artist_become_catalog_records() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == f"/album/{ALBUM}":
            return httpx.Response(200, json=ALBUM_DOC)
        if path == f"/album/{ALBUM}/tracks":
            return httpx.Response(200, json={"tracks": [TRACK_DOC]})
        assert path == f"/artist/{ARTIST}"
        doc = {"id": ARTIST, "name": "Miles", "genres": ["jazz"], "portraits": [image(PORTRAIT)]}
        return httpx.Response(200, json={**doc, "followers": 3})

    client = client_for(handler)
    meta = await client.album(ALBUM)
    assert (meta.album.name, meta.album.release_date, meta.album.genres) == (
        "Blue",
        -10_000,
        ("jazz",),
    )
    assert meta.album.artist_ids == (ARTIST,) and meta.album.image_ids == (COVER,)
    assert meta.album.discs[0].track_ids == (TRACK,)
    assert meta.covers[0].width == 64
    (track,) = await client.album_tracks(ALBUM)
    assert (track.id, track.duration_ms, track.is_explicit, track.number) == (TRACK, 1234, True, 1)
    artist = await client.artist(ARTIST)
    assert (artist.artist.name, artist.artist.image_ids) == ("Miles", (PORTRAIT,))


async def test_tracks_may_be_a_bare_array_and_must_belong_to_the_album() -> None:
    client = client_for(answer(200, json=[TRACK_DOC]))
    assert [t.id for t in await client.album_tracks(ALBUM)] == [TRACK]
    with pytest.raises(DownloaderParseError):
        await client.album_tracks(ARTIST)  # the tracks name another album
    missing = {k: v for k, v in TRACK_DOC.items() if k != "duration"}
    with pytest.raises(DownloaderParseError, match="duration"):
        await client_for(answer(200, json=[missing])).album_tracks(ALBUM)


async def test_search_and_discography_results_are_normalised() -> None:
    result = {"id": ALBUM, "type": "album", "name": "Blue", "year": 1959, "extra": 1}
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        if request.url.path == "/search":
            return httpx.Response(200, json={"results": [result]})
        return httpx.Response(200, json={"artist": {**result, "type": "artist", "id": ARTIST},
                                         "albums": [result]})  # fmt: skip

    client = client_for(handler)
    found = await client.search("blue & green", "album", limit=3)
    assert found == [{"id": ALBUM, "type": "album", "name": "Blue", "artist_name": None,
                      "image_url": None, "year": 1959}]  # fmt: skip
    assert seen[0].params["q"] == "blue & green" and seen[0].params["limit"] == "3"
    disco = await client.discography(ARTIST)
    assert disco["artist"]["id"] == ARTIST and [a["id"] for a in disco["albums"]] == [ALBUM]
    with pytest.raises(DownloaderBadRequest):
        await client.search("x", "playlist")


# -- downloads -----------------------------------------------------------------------------------


async def download(
    client: DownloaderClient, path_for: Callable[[str], Path], url_path: str, max_bytes: int
) -> Saved:
    """Receive a media body and publish it as the processor does (`receive_media`): nothing
    is published if either fails or is cancelled."""
    # The layout gives the file its way off the loop: inline here, so that the autojump clock
    # never jumps while a file is being written.
    media = files.MediaLayout(path_for("audio/flac").parent / "layout", offload=Offload.inline())
    async with receive_media(client, media, url_path, max_bytes, path_for) as received:
        return await received.publish()


def audio_path(tmp_path: Path) -> Callable[[str], Path]:
    def path_for(media_type: str) -> Path:
        ext = files.AUDIO_TYPES.get(media_type)
        if ext is None:
            raise DownloaderParseError(f"unsupported content type {media_type}")
        return tmp_path / f"{TRACK}.{ext}"

    return path_for


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


async def drip(body: bytes, chunk: int = 1000, delay: float = 0.0) -> AsyncIterator[bytes]:
    for start in range(0, len(body), chunk):
        await trio.sleep(delay)
        yield body[start : start + chunk]


async def test_a_download_publishes_exactly_the_bytes_sent(tmp_path: Path) -> None:
    body = bytes(range(256)) * 5000
    headers = {"content-type": "audio/flac; charset=binary", "content-length": str(len(body))}
    client = client_for(
        lambda request: httpx.Response(200, headers=headers, content=drip(body, 70_000))
    )
    result = await download(client, audio_path(tmp_path), f"/track/{TRACK}/audio", 10**7)
    assert (result.size, result.media_type, result.path.name) == (
        len(body),
        "audio/flac",
        f"{TRACK}.flac",
    )
    assert result.path.read_bytes() == body
    assert leftovers(tmp_path) == [f"{TRACK}.flac"]


# The rows about the answer's status or its transport, not about a JSON document.
TRANSPORT_ROWS = [row for row in ERROR_ROWS if row[1] is not DownloaderParseError]


@pytest.mark.parametrize(("handler", "kind", "error_type"), TRANSPORT_ROWS)
async def test_every_failure_of_a_download_maps_to_its_error_type_and_leaves_no_file(
    tmp_path: Path, handler: Handler, kind: type[DownloaderError], error_type: ErrorType
) -> None:
    client = client_for(handler)
    with pytest.raises(kind) as caught:
        await download(client, audio_path(tmp_path), f"/track/{TRACK}/audio", 10**6)
    assert type(caught.value) is kind
    assert caught.value.error_type is error_type
    assert f"/track/{TRACK}/audio" in caught.value.message
    assert leftovers(tmp_path) == []
    await client.aclose()


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"content-type": "audio/mpeg", "content-length": "5000"}, b"x" * 2000, "truncated body"),
        ({"content-type": "audio/mpeg", "content-length": "20000"}, b"x" * 20000, "too large"),
        ({"content-type": "audio/mpeg"}, b"x" * 20000, "too large"),
        ({"content-type": "text/html"}, b"<html>", "unsupported content type"),
        ({}, b"x", "unsupported content type"),
    ],
)
async def test_a_bad_body_is_a_parse_error_and_publishes_nothing(
    tmp_path: Path, headers: dict[str, str], body: bytes, message: str
) -> None:
    client = client_for(lambda request: httpx.Response(200, headers=headers, content=drip(body)))
    with pytest.raises(DownloaderParseError, match=message):
        await download(client, audio_path(tmp_path), f"/track/{TRACK}/audio", 10_000)
    assert leftovers(tmp_path) == []


async def test_disk_errors_are_storage_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: files.AtomicWriter, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.AtomicWriter, "write", full)
    headers = {"content-type": "audio/ogg"}
    client = client_for(lambda request: httpx.Response(200, headers=headers, content=b"x" * 100))
    with pytest.raises(StorageFailure, match="No space left") as caught:
        await download(client, audio_path(tmp_path), f"/track/{TRACK}/audio", 10_000)
    assert caught.value.error_type is ErrorType.STORAGE
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("size", "chunk"),
    [(50_000, 1000), (4 * 2**20, 2**18)],  # in memory; partly written to a temporary file
)
async def test_a_cancelled_download_leaves_no_file(
    tmp_path: Path, autojump_clock: trio.abc.Clock, size: int, chunk: int
) -> None:
    body = b"y" * size
    headers = {"content-type": "audio/wav", "content-length": str(len(body))}
    client = client_for(
        lambda request: httpx.Response(200, headers=headers, content=drip(body, chunk, 1.0)),
        timeout=60,  # the test cancels it first
    )
    with trio.move_on_after(10.5) as scope:
        await download(client, audio_path(tmp_path), f"/track/{TRACK}/audio", 10**8)
    assert scope.cancelled_caught
    assert leftovers(tmp_path) == []


async def test_a_stalled_download_times_out_within_the_read_timeout(tmp_path: Path) -> None:
    spec = CatalogSpec(artists=1, albums_per_artist=1, tracks_per_album=1, audio_bytes=10_000)
    knobs = Knobs()
    knobs.fault("stall", "audio", stall_seconds=3600)
    async with open_fake_downloader(spec, knobs) as fake:
        client = DownloaderClient(fake.base_url, 0.5)
        track = fake.catalog.track_ids[0]
        start = trio.current_time()
        with trio.fail_after(10), pytest.raises(DownloaderTimeout):
            await download(client, audio_path(tmp_path), f"/track/{track}/audio", 10**6)
        assert trio.current_time() - start < 1.5
        await client.aclose()
    assert leftovers(tmp_path) == []


async def test_a_download_cancelled_mid_body_over_http_leaves_no_file(tmp_path: Path) -> None:
    # 3 MiB at 4 MiB/s: cancelled with its first MiB already in a temporary file.
    spec = CatalogSpec(artists=1, albums_per_artist=1, tracks_per_album=1, audio_bytes=3 * 2**20)
    async with open_fake_downloader(spec, Knobs(audio_bytes_per_sec=4 * 2**20)) as fake:
        client = DownloaderClient(fake.base_url, 5)
        track = fake.catalog.track_ids[0]
        with trio.move_on_after(0.5) as scope:
            await download(client, audio_path(tmp_path), f"/track/{track}/audio", 10**8)
        assert scope.cancelled_caught
        assert leftovers(tmp_path) == []
        await client.aclose()


async def test_a_download_cancelled_while_the_downloader_is_silent_returns_promptly(
    tmp_path: Path,
) -> None:
    spec = CatalogSpec(artists=1, albums_per_artist=1, tracks_per_album=1, audio_bytes=10_000)
    knobs = Knobs()
    knobs.fault("stall", "audio", stall_seconds=3600)
    async with open_fake_downloader(spec, knobs) as fake:
        client = DownloaderClient(fake.base_url, 30)  # the read timeout would end it in 30 s
        track = fake.catalog.track_ids[0]
        start = trio.current_time()
        with trio.move_on_after(0.3):
            await download(client, audio_path(tmp_path), f"/track/{track}/audio", 10**6)
        assert trio.current_time() - start < 0.3 + 0.5  # the connection is closed at once
        assert leftovers(tmp_path) == []
        await client.aclose()


@pytest.mark.parametrize(
    ("fault", "message"), [("truncate", "truncated"), ("endless", "too large")]
)
async def test_hostile_bodies_over_http_publish_nothing(
    tmp_path: Path, fault: str, message: str
) -> None:
    spec = CatalogSpec(artists=1, albums_per_artist=1, tracks_per_album=1, audio_bytes=300_000)
    knobs = Knobs()
    knobs.fault(fault, "audio", times=1)
    async with open_fake_downloader(spec, knobs) as fake:
        client = DownloaderClient(fake.base_url, 5)
        track = fake.catalog.track_ids[0]
        with trio.fail_after(10), pytest.raises(DownloaderParseError, match=message):
            await download(client, audio_path(tmp_path), f"/track/{track}/audio", 1_000_000)
        assert leftovers(tmp_path) == []
        result = await download(client, audio_path(tmp_path), f"/track/{track}/audio", 1_000_000)
        assert result.path.read_bytes() == audio_bytes(spec, track)
        await client.aclose()


async def test_an_endless_json_answer_is_cut_at_its_cap() -> None:
    knobs = Knobs()
    knobs.fault("endless", "album", times=1)
    async with open_fake_downloader(CatalogSpec(artists=1, albums_per_artist=1), knobs) as fake:
        client = DownloaderClient(fake.base_url, 30)
        album = fake.catalog.album_ids[0]
        with trio.fail_after(20), pytest.raises(DownloaderParseError, match="too large"):
            await client.album(album)
        assert (await client.album(album)).album.id == album
        await client.aclose()


async def test_a_media_body_is_bounded_by_the_timeout_as_a_whole(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """SPEC §8.6 "Deadlines": 512 bytes a second, each read well within any read timeout,
    ends at the request's deadline as `timeout`, and leaves no file."""
    body = b"z" * 100_000
    headers = {"content-type": "audio/flac"}
    client = client_for(
        lambda request: httpx.Response(200, headers=headers, content=drip(body, 512, 1.0)),
        timeout=20,
    )
    start = trio.current_time()
    with pytest.raises(DownloaderTimeout, match="longer than 20 s"):
        await download(client, audio_path(tmp_path), f"/track/{TRACK}/audio", 10**6)
    assert trio.current_time() - start == pytest.approx(20)
    assert leftovers(tmp_path) == []
