"""Catalog content (SPEC §5): artist, album, track and image metadata, image and audio files.

Every id is validated before it reaches a query or a path (400 `INVALID_ID`); routes take the rest
of the path (`<path:…>`) so even `../x` gets that 400 instead of a routing 404. Files are read in
the media folder's worker threads (`storage.files.MediaRead`): one call opens the file, stats it
and reads the requested span, or its first 1 MiB when the span is longer, and the body sends
what each call read; a player's range so costs one thread round trip, a whole file one per MiB,
and no file is ever held in memory whole. Only a single
`bytes` range is honoured: other units, several ranges, a malformed header or any `If-Range`
(no validators are issued to match it against) get the whole file, as RFC 9110 allows; a range
starting past the end is 416. Successful responses carry `Cache-Control: max-age=<config>`.
A track, alone or in its album, carries `availability`: `available`, `missing`, or `unavailable`
once the integrity watchdog has given up on its audio (SPEC §8.9).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio
from quart import Blueprint, Response, current_app, jsonify, request
from quart_schema import document_response

from api.auth import requires
from api.bodies_catalog import Album, Artist, Track
from api.context import root
from api.errors import ApiError
from api.openapi import CONTENT_ID, IMAGE_ID, answers, media, path_schemas
from storage import catalog_read
from storage.files import AUDIO_MEDIA_TYPES, CLEANUP_S, MediaRead
from storage.ids import InvalidId, content_id, image_id
from storage.offload import Offload
from storage.queue import ContentType
from storage.users import Permission

blueprint = Blueprint("content", __name__, url_prefix="/v1/content")
# Digits capped so a hostile header cannot ask int() for a huge conversion.
_BYTE_RANGE = re.compile(r"(\d{0,19})-(\d{0,19})", re.ASCII)


class RangeNotSatisfiable(Exception):
    """No byte of the file lies in the requested range."""

    def __init__(self, size: int) -> None:
        super().__init__(f"no byte of a {size}-byte file lies in the range")
        self.size = size


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The `[begin, end)` span a `Range` header asks of a `size`-byte file; None for all of it."""
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    match = _BYTE_RANGE.fullmatch(spec.strip()) if sep else None
    if unit.strip().lower() != "bytes" or match is None or match.group(0) == "-":
        return None
    first, last = match.groups()
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(size - suffix, 0), size
    begin = int(first)
    if last and int(last) < begin:
        return None  # invalid, so ignored like any malformed header
    if begin >= size:
        raise RangeNotSatisfiable(size)
    return begin, size if not last else min(int(last) + 1, size)


def _valid(check: Callable[[object], str], raw: str) -> str:
    try:
        return check(raw)
    except InvalidId as exc:
        raise ApiError(400, str(exc), "INVALID_ID") from None


def _cached(response: Response) -> Response:
    response.headers["Cache-Control"] = f"max-age={root().config.content_cache_age_sec}"
    return response


async def _metadata(
    method: Callable[[str], dict[str, Any] | None],
    check: Callable[[object], str],
    raw: str,
    kind: str,
) -> Response:
    """The JSON of `method(id)`, read in a worker thread; 404 if there is no such `kind`."""
    ident = _valid(check, raw)
    found = await root().catalog.db.run(method, ident)
    if found is None:
        raise ApiError(404, f"unknown {kind}", "NOT_FOUND")
    return _cached(jsonify(found))


async def _with_availability(
    method: Callable[[str], dict[str, Any] | None], raw: str, kind: str
) -> Response:
    """An album's or a track's JSON, each track with its `availability` (SPEC §8.9): the
    catalog says whether its audio is recorded, the download queue whether the watchdog gave
    up on it. The marks of all the tracks are read with one statement, in the catalog read's
    worker thread. No download manager, no marks."""
    downloads = root().downloads
    admin = downloads.queue_admin if downloads is not None else None

    def read(ident: str) -> dict[str, Any] | None:
        found = method(ident)
        if found is None:
            return None
        unavailable: set[str] = set()
        if admin is not None:
            ids = catalog_read.track_ids(found)
            unavailable = admin.unavailable_among(ContentType.TRACK_AUDIO, ids)
        return catalog_read.add_availability(found, unavailable)

    return await _metadata(read, content_id, raw, kind)


async def _pieces(read: MediaRead, offload: Offload) -> AsyncIterator[bytes]:
    """The body: the piece the first call read, then one call per further piece. A body
    stopped early (the listener gone) closes its file."""
    try:
        first, read.first = read.first, b""
        if first:
            yield first
        while read.remaining:
            yield await offload.run(read.next_piece)
    finally:
        if read.remaining:
            with trio.move_on_after(CLEANUP_S, shield=True):
                await offload.run(read.close)


async def _send_file(path: Path, mimetype: str, what: str) -> Response:
    """Send a file (or the requested range of it); 404 if it is not on disk."""
    media = root().media
    header = None if "If-Range" in request.headers else request.headers.get("Range")

    def span(size: int) -> tuple[int, int]:
        return byte_range(header, size) or (0, size)

    try:
        read = await media.offload.run(MediaRead.open, media.root, path, span)
    except RangeNotSatisfiable as exc:
        raise ApiError(
            416, "requested range not satisfiable", headers={"Content-Range": f"bytes */{exc.size}"}
        ) from None
    except OSError:
        raise ApiError(404, f"{what} file not found", "NOT_FOUND") from None
    # The same pure function of the header and the size as in the worker: was it a range?
    ranged = byte_range(header, read.size) is not None
    response = current_app.response_class(
        _pieces(read, media.offload), status=206 if ranged else 200, mimetype=mimetype
    )
    response.headers["Accept-Ranges"] = "bytes"
    response.content_length = read.end - read.begin
    if ranged:
        response.headers["Content-Range"] = f"bytes {read.begin}-{read.end - 1}/{read.size}"
    return _cached(response)


@blueprint.get("/artist/<path:artist_id>")
@document_response(Artist)
@answers(404)
@path_schemas(artist_id=CONTENT_ID)
@requires(Permission.AccessCatalog)
async def artist(artist_id: str) -> Response:
    return await _metadata(root().catalog.get_artist, content_id, artist_id, "artist")


@blueprint.get("/album/<path:album_id>")
@document_response(Album)
@answers(404)
@path_schemas(album_id=CONTENT_ID)
@requires(Permission.AccessCatalog)
async def album(album_id: str) -> Response:
    return await _with_availability(root().catalog.get_album, album_id, "album")


@blueprint.get("/track/<path:track_id>")
@document_response(Track)
@answers(404)
@path_schemas(track_id=CONTENT_ID)
@requires(Permission.AccessCatalog)
async def track(track_id: str) -> Response:
    return await _with_availability(root().catalog.get_track, track_id, "track")


@blueprint.get("/image/<path:raw_id>")
@answers(404, 416)
@path_schemas(raw_id=IMAGE_ID)
@media("image/jpeg", 200, 206)
@requires(Permission.AccessCatalog)
async def image(raw_id: str) -> Response:
    valid_id = _valid(image_id, raw_id)
    catalog = root().catalog
    if await catalog.db.run(catalog.get_image, valid_id) is None:
        raise ApiError(404, "unknown image", "NOT_FOUND")
    return await _send_file(root().media.image_path(valid_id), "image/jpeg", "image")


@blueprint.get("/stream/<path:raw_id>")
@answers(404, 416)
@path_schemas(raw_id=CONTENT_ID)
@media("audio/*", 200, 206)
@requires(Permission.AccessCatalog)
async def stream(raw_id: str) -> Response:
    valid_id = _valid(content_id, raw_id)
    catalog = root().catalog
    audio_format = await catalog.db.run(catalog.track_audio_format, valid_id)
    mimetype = AUDIO_MEDIA_TYPES.get(audio_format or "")
    if audio_format is None or mimetype is None:
        raise ApiError(404, "no audio for this track", "NOT_FOUND")
    return await _send_file(root().media.audio_path(valid_id, audio_format), mimetype, "audio")
