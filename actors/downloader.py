"""The client of the external downloader service (SPEC §12) and the boundary of its errors.

One `httpx.AsyncClient` for every call (search, discography, an album's metadata, media
bodies), built from config with explicit connect/read/write/pool timeouts and connection
limits; `transport` is the test seam (`httpx.MockTransport`, or `httpx.ASGITransport` around the
fake downloader). Every failure leaves as a `DownloaderError` subclass whose `error_type`
follows SPEC §8.6; the JSON answers are validated into catalog records by
`actors.downloader_json`.

`downloader_timeout_sec` bounds each whole request, body included (SPEC §8.6 "Deadlines"): a
body that trickles or stalls is abandoned as `DownloaderTimeout` when it passes, whatever the
rate at which bytes come, and the connection is closed. Metadata answers are read into memory
up to `MAX_JSON_BYTES`; a media body streams to the caller's sink, bounded by its cap.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import trio

from actors import downloader_json as parse
from actors.downloader_json import AlbumMeta, ArtistMeta
from actors.downloader_stream import MediaBody, Sink, read_capped
from actors.failures import (
    DownloaderBadRequest,
    DownloaderConnectionError,
    DownloaderError,
    DownloaderNotFound,
    DownloaderParseError,
    DownloaderRateLimited,
    DownloaderTimeout,
)
from storage.catalog import TrackRecord
from storage.ids import is_content_id, is_image_id

__all__ = ["AlbumMeta", "ArtistMeta", "DownloaderClient", "MediaBody"]

CONNECT_TIMEOUT_S = 10.0
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
DEFAULT_RETRY_AFTER_S = 5.0


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); 5 s if absent or bad.
    Delta-seconds are ASCII digits only: `float` would also take "inf", "nan" or "1e300". How
    long the queue actually waits is bounded where it is recorded (`rate_limit_wait`)."""
    if value is None:
        return DEFAULT_RETRY_AFTER_S
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S
    if when.tzinfo is None:
        return DEFAULT_RETRY_AFTER_S
    return max(0.0, when.timestamp() - time.time())


def _detail(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("error") or "")[:200]
    return ""


def _status_error(response: httpx.Response, body: bytes, path: str) -> DownloaderError:
    status = response.status_code
    detail = _detail(body)
    message = f"downloader answered {status} for {path}" + (f": {detail}" if detail else "")
    kind: type[DownloaderError]
    if status == 404:
        kind = DownloaderNotFound
    elif status == 429:
        after = _retry_after(response.headers.get("retry-after"))
        return DownloaderRateLimited(message, status=status, retry_after=after)
    elif status == 504:
        kind = DownloaderTimeout
    elif status >= 500:
        kind = DownloaderConnectionError
    elif status >= 400:
        kind = DownloaderBadRequest
    else:
        kind = DownloaderError
    return kind(message, status=status)


def _valid_id(value: str, what: str) -> str:
    # Ids reach the URL path: refuse anything that is not a content id before asking.
    if not is_content_id(value):
        raise DownloaderBadRequest(f"not a {what} id: {value[:64]!r}")
    return value


class DownloaderClient:
    """Async client of the downloader API. Call `aclose()` when done."""

    def __init__(
        self,
        base_url: str,
        timeout: float,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 4,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        timeouts = httpx.Timeout(
            connect=min(CONNECT_TIMEOUT_S, timeout), read=timeout, write=timeout, pool=timeout
        )
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeouts,
            limits=limits,
            transport=transport,
            follow_redirects=False,
            trust_env=False,  # configuration comes from the config file only
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    @asynccontextmanager
    async def _open(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed 2xx response; any other status or a transport failure raises."""
        try:
            async with self._client.stream("GET", path, params=params, headers=headers) as response:
                if not 200 <= response.status_code < 300:
                    body = await read_capped(response, path, MAX_ERROR_BODY_BYTES)
                    raise _status_error(response, body, path)
                yield response
        except httpx.TimeoutException as exc:
            raise _timeout(path) from exc
        except httpx.TransportError as exc:
            raise _unreachable(path, exc) from exc

    async def _get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The JSON answer of one GET, bounded in size and, as a whole, by the timeout."""
        with trio.move_on_after(self.timeout) as deadline:
            async with self._open(path, params, {"accept": "application/json"}) as response:
                body = await read_capped(response, path, MAX_JSON_BYTES)
        if deadline.cancelled_caught:
            raise self._too_long(path)
        return _decode(body, path)

    def _too_long(self, path: str) -> DownloaderTimeout:
        return DownloaderTimeout(f"downloader took longer than {self.timeout:g} s on {path}")

    async def reachable(self) -> bool:
        """Whether the downloader answers at all, for health checks: a GET of its root, whose
        body is not read. Any status below 500 says it is there; a connection refused or failed
        or a 5xx (a proxy in front of a downloader that is down) says it is not. The caller
        bounds the wait (`trio.move_on_after`). The downloader API has no health route, and
        each of its other routes costs it a question to its own upstream."""
        try:
            async with self._client.stream("GET", "/") as response:
                return response.status_code < 500
        except httpx.HTTPError:
            return False

    async def search(self, q: str, type: str, limit: int = 20) -> list[dict[str, Any]]:
        """`[{id, type, name, artist_name, image_url, year}]` (absent optionals are null)."""
        if type not in parse.SEARCH_TYPES:
            raise DownloaderBadRequest(f"search type must be album or artist, not {type[:32]!r}")
        doc = await self._get_json("/search", {"q": q, "type": type, "limit": limit})
        return parse.parse_search(doc, type)

    async def discography(self, artist_id: str) -> dict[str, Any]:
        """`{"artist": SearchResult, "albums": [SearchResult]}`."""
        path = f"/artist/{_valid_id(artist_id, 'artist')}/discography"
        return parse.parse_discography(await self._get_json(path))

    async def album(self, album_id: str) -> AlbumMeta:
        path = f"/album/{_valid_id(album_id, 'album')}"
        return parse.parse_album(await self._get_json(path), album_id)

    async def album_tracks(self, album_id: str) -> list[TrackRecord]:
        path = f"/album/{_valid_id(album_id, 'album')}/tracks"
        return parse.parse_tracks(await self._get_json(path), album_id)

    async def artist(self, artist_id: str) -> ArtistMeta:
        path = f"/artist/{_valid_id(artist_id, 'artist')}"
        return parse.parse_artist(await self._get_json(path), artist_id)

    async def image(self, image_id: str, max_bytes: int) -> tuple[str, bytes]:
        """An image's media type and bytes, read into memory (at most `max_bytes`), for the
        API to pass on to a client; bounded as a whole by the timeout. Only an image id ever
        reaches the URL: the daemon fetches nothing else on a client's behalf."""
        if not is_image_id(image_id):
            raise DownloaderBadRequest(f"not an image id: {image_id[:64]!r}")
        path = f"/image/{image_id}"
        with trio.move_on_after(self.timeout) as deadline:
            async with self._open(path) as response:
                body = MediaBody(response, path, max_bytes)
                parts: list[bytes] = []
                await body.receive(_appending(parts))
        if deadline.cancelled_caught:
            raise self._too_long(path)
        return body.media_type, b"".join(parts)

    @asynccontextmanager
    async def media(self, path: str, max_bytes: int) -> AsyncIterator[MediaBody]:
        """A media body on its way (see `MediaBody`), for the block to receive.

        The whole request, the block included, is bounded by the timeout: past it the block is
        cancelled and this raises `DownloaderTimeout` (the block's own cleanup runs first).
        """
        with trio.move_on_after(self.timeout) as deadline:
            async with self._open(path, headers={"accept-encoding": "identity"}) as response:
                yield MediaBody(response, path, max_bytes)
        if deadline.cancelled_caught:
            raise self._too_long(path)


def _appending(parts: list[bytes]) -> Sink:
    async def append(chunk: bytes) -> None:
        parts.append(chunk)

    return append


def _decode(body: bytes, path: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise DownloaderParseError(f"invalid JSON from {path}: {exc}") from exc
    except RecursionError:  # a per-item failure like any bad answer, not a bug
        raise DownloaderParseError(f"JSON from {path} is nested too deeply") from None


def _timeout(path: str) -> DownloaderTimeout:
    return DownloaderTimeout(f"downloader timed out on {path}")


def _unreachable(path: str, exc: Exception) -> DownloaderConnectionError:
    return DownloaderConnectionError(f"cannot reach the downloader for {path}: {exc}")
