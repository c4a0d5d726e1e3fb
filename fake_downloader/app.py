"""The fake downloader as a plain ASGI application over a synthetic `Catalog`.

Per request: count it, wait `latency_ms`, maybe inject a failure, route and validate, refuse a
second concurrent audio download (429), then deliver the reply, bent by a fault if one is armed.
With `Knobs.response_log` set, every response is also logged (`fake_downloader.response_log`).
Raw ASGI keeps streaming, truncation and disconnect handling fully under control.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import trio

from fake_downloader import payloads, real_payloads
from fake_downloader.catalog import Catalog
from fake_downloader.content import audio_period, image_period
from fake_downloader.knobs import Knobs
from fake_downloader.response_log import logged
from fake_downloader.responses import (
    HttpError,
    Receive,
    Reply,
    Send,
    deliver,
    error_reply,
    json_reply,
)

_CONTENT_ID = re.compile(r"[0-9A-Za-z]{22}")
_IMAGE_ID = re.compile(r"[0-9a-f]{40}")
_ROUTES: dict[tuple[str, str], str] = {
    ("artist", ""): "artist",
    ("artist", "discography"): "discography",
    ("album", ""): "album",
    ("album", "tracks"): "album_tracks",
    ("track", ""): "track",
    ("track", "audio"): "audio",
    ("image", ""): "image",
}
MAX_SEARCH_LIMIT = 1000


def route(path: str) -> tuple[str, str] | None:
    """`(endpoint, id)` for a request path (id is "" for search), or None if unknown."""
    parts = path.strip("/").split("/")
    if parts == ["search"]:
        return "search", ""
    if len(parts) not in (2, 3):
        return None
    endpoint = _ROUTES.get((parts[0], parts[2] if len(parts) == 3 else ""))
    return None if endpoint is None else (endpoint, parts[1])


class FakeDownloaderApp:
    """ASGI callable serving `catalog` under the control of `knobs`."""

    def __init__(self, catalog: Catalog, knobs: Knobs) -> None:
        self.catalog = catalog
        self.knobs = knobs

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http" and self.knobs.response_log is not None:
            found = route(scope["path"])
            endpoint, ident = found if found else ("unknown", "")
            respond = partial(self._http, scope)
            await logged(respond, receive, send, endpoint, ident, self.knobs.response_log)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        knobs = self.knobs
        found = route(scope["path"])
        endpoint = found[0] if found else "unknown"
        knobs.counts[endpoint] += 1
        knobs.changed()
        if knobs.latency_ms > 0:
            await trio.sleep(knobs.latency_ms / 1000)
        head = scope["method"] == "HEAD"
        reply = self._early_error(found, scope["method"])
        if reply is None:
            assert found is not None
            try:
                reply = self._build(endpoint, found[1], scope["query_string"])
            except HttpError as error:
                reply = error_reply(error.status, error.message)
        if reply.status != 200 or endpoint != "audio":
            fault = knobs.take_fault(endpoint) if reply.status == 200 else None
            await deliver(receive, send, reply, fault, head=head)
            return
        if knobs.active_audio > 0 and not knobs.allow_parallel_audio:
            busy = error_reply(429, "another audio download is in progress", knobs.retry_after_s)
            await deliver(receive, send, busy, None, head=head)
            return
        slot = _AudioSlot(knobs)
        try:
            fault = knobs.take_fault(endpoint)
            await deliver(receive, send, reply, fault, head=head, on_last=slot.release)
        finally:
            slot.release()

    def _early_error(self, found: tuple[str, str] | None, method: str) -> Reply | None:
        if found is None:
            return error_reply(404, "no such route")
        if method not in ("GET", "HEAD"):
            return error_reply(405, f"{method} is not supported")
        status = self.knobs.draw_failure(found[0])
        if status is None:
            return None
        return error_reply(status, "injected failure", self.knobs.retry_after_s)

    def _build(self, endpoint: str, ident: str, query_string: bytes) -> Reply:
        catalog = self.catalog
        shapes = real_payloads if self.knobs.shapes == "real" else payloads
        if endpoint == "search":
            return json_reply(self._search(query_string, shapes.search))
        if endpoint == "image":
            return self._image(ident)
        if endpoint in ("artist", "discography"):
            index = self._lookup(ident, catalog.artist_index(ident), "artist")
            build = shapes.artist if endpoint == "artist" else payloads.discography
            return json_reply(build(catalog, index))
        if endpoint in ("album", "album_tracks"):
            index = self._lookup(ident, catalog.album_index(ident), "album")
            if endpoint == "album":
                return json_reply(shapes.album(catalog, index))
            return json_reply(shapes.album_tracks(catalog, index))
        index = self._lookup(ident, catalog.track_index(ident), "track")
        if endpoint == "track":
            return json_reply(shapes.track(catalog, index))
        return self._audio(ident, index)

    def _lookup(self, ident: str, index: int | None, kind: str) -> int:
        if not _CONTENT_ID.fullmatch(ident):
            raise HttpError(400, f"malformed {kind} id (expected 22 base62 characters)")
        if index is None or ident in self.knobs.not_found_ids:
            raise HttpError(404, f"unknown {kind} {ident}")
        return index

    def _search(
        self, query_string: bytes, search: Callable[[Catalog, str, str, int], object]
    ) -> object:
        params = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
        if "q" not in params:
            raise HttpError(400, "missing query parameter q")
        kind = params.get("type", ["album"])[0]
        if kind not in ("album", "artist"):
            raise HttpError(400, "type must be album or artist")
        try:
            limit = int(params.get("limit", ["20"])[0])
        except ValueError:
            raise HttpError(400, "limit must be an integer") from None
        if limit < 0:
            raise HttpError(400, "limit must not be negative")
        return search(self.catalog, params["q"][0], kind, min(limit, MAX_SEARCH_LIMIT))

    def _image(self, ident: str) -> Reply:
        if not _IMAGE_ID.fullmatch(ident):
            raise HttpError(400, "malformed image id (expected 40 lowercase hex characters)")
        if not self.catalog.has_image(ident) or ident in self.knobs.not_found_ids:
            raise HttpError(404, f"unknown image {ident}")
        return Reply(200, "image/jpeg", image_period(ident), self.catalog.spec.image_bytes)

    def _audio(self, track_id: str, index: int) -> Reply:
        if self.catalog.is_audio_missing(index):
            raise HttpError(404, f"no audio for track {track_id}")
        knobs = self.knobs
        size = self.catalog.spec.audio_bytes
        period = audio_period(track_id)
        return Reply(200, knobs.audio_content_type, period, size, rate=knobs.audio_bytes_per_sec)


class _AudioSlot:
    """One streaming audio download, counted in `knobs.active_audio` until released."""

    def __init__(self, knobs: Knobs) -> None:
        self._knobs = knobs
        self._held = True
        knobs.active_audio += 1
        knobs.changed()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._knobs.active_audio -= 1
            self._knobs.changed()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(catalog: Catalog, knobs: Knobs | None = None) -> FakeDownloaderApp:
    """The ASGI app; keep a reference to `knobs` to steer it while it runs."""
    return FakeDownloaderApp(catalog, knobs if knobs is not None else Knobs())
