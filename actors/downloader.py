"""The client of the external downloader service (SPEC §12) and the boundary of its errors.

Two httpx connection pools with the same explicit connect/read/write/pool timeouts and connection
limits, built from config: an `httpx.AsyncClient` for the API's calls (search, discography), on
the event loop, and a blocking `httpx.HTTPTransport` for the processor's, in worker threads: the
album step's three calls (`album_now` and its twins) and media bodies (see
`actors.downloader_stream` for why). `transport` and `media_transport` are the test seams
(`httpx.MockTransport`, or an async transport bridged to the worker threads). Every failure
leaves as a `DownloaderError` subclass whose `error_type` follows SPEC §8.6; the JSON answers are
validated into catalog records by `actors.downloader_json`.

Metadata calls read at most `MAX_JSON_BYTES` and are bounded as a whole by the configured
timeout. Downloads stream: the body's size is checked against `max_bytes` while it arrives and
against Content-Length at the end, a large body goes to a temporary file batch by batch, and
only a complete body is published under its final name. The read timeout applies per chunk, so a
stalled download fails within it while a long healthy one is never cut off.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import trio

from actors import downloader_json as parse
from actors.downloader_errors import (
    DownloaderBadRequest,
    DownloaderConnectionError,
    DownloaderError,
    DownloaderNotFound,
    DownloaderParseError,
    DownloaderRateLimited,
    DownloaderTimeout,
    DownloaderTooLarge,
    StorageFailure,
)
from actors.downloader_json import AlbumMeta, ArtistMeta
from actors.downloader_stream import (
    Received,
    Stopped,
    body_chunks,
    content_length,
    read_capped,
    read_capped_now,
)
from actors.downloader_stream import receive_now as receive_body
from storage.catalog import TrackRecord
from storage.ids import is_content_id

__all__ = [
    "AlbumMeta",
    "ArtistMeta",
    "DownloaderBadRequest",
    "DownloaderClient",
    "DownloaderConnectionError",
    "DownloaderError",
    "DownloaderNotFound",
    "DownloaderParseError",
    "DownloaderRateLimited",
    "DownloaderTimeout",
    "DownloaderTooLarge",
    "StorageFailure",
]

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
        media_transport: httpx.BaseTransport | None = None,
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
        # The processor's calls: a bare transport, used from worker threads. A client
        # would add a quarter to the CPU of each download (cookies, URL merging, hooks) and
        # nothing a download needs; redirects are not followed and no proxy is read either way.
        self._media = media_transport or httpx.HTTPTransport(limits=limits)
        self._media_timeouts = timeouts.as_dict()

    async def aclose(self) -> None:
        """Close both pools. A worker still blocked on a download abandoned by a cancellation
        (see `downloader_stream.in_worker`) sees its connection fail and cleans up after itself."""
        try:
            await self._client.aclose()
        finally:
            self._media.close()

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

    @contextmanager
    def _open_now(
        self, path: str, stopped: Callable[[], bool], accept: str = "*/*"
    ) -> Iterator[tuple[httpx.Response, Iterator[bytes]]]:
        """Blocking `_open` (no content coding: sizes are counted as sent): a 2xx response and
        its body's chunks, the whole request bounded by the timeout (see `_Deadline`): a body
        still arriving when it passes, however slowly it trickles or long it stalls, ends as
        `DownloaderTimeout`. The chunks end with `Stopped` once `stopped()` turns True."""
        deadline = _Deadline(self.timeout)

        def ended() -> bool:
            return stopped() or deadline.passed()

        request = httpx.Request(
            "GET",
            self.base_url + path,
            headers={"accept": accept, "accept-encoding": "identity"},
            extensions={"timeout": self._media_timeouts},
        )
        try:
            response = self._media.handle_request(request)
            try:
                deadline.enforce(response)
                chunks = body_chunks(response, path, ended)
                if not 200 <= response.status_code < 300:
                    body = b"".join(_capped(chunks, MAX_ERROR_BODY_BYTES))
                    raise _status_error(response, body, path)
                yield response, chunks
            finally:
                deadline.cancel()
                response.close()
        except (Stopped, DownloaderError) as exc:
            if stopped() or not deadline.passed():
                raise
            raise self._too_long(path) from exc
        except httpx.TimeoutException as exc:
            raise _timeout(path) from exc
        except httpx.TransportError as exc:
            raise _unreachable(path, exc) from exc

    async def _get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The JSON answer of one GET, bounded in size and, as a whole, by the timeout."""
        with trio.move_on_after(self.timeout) as scope:
            async with self._open(path, params, {"accept": "application/json"}) as response:
                body = await read_capped(response, path, MAX_JSON_BYTES)
        if scope.cancelled_caught:
            raise self._too_long(path)
        return _decode(body, path)

    def _get_json_now(self, path: str, stopped: Callable[[], bool]) -> Any:
        """Blocking `_get_json` (for a worker thread, see `in_worker`): the same bounds."""
        with self._open_now(path, stopped, "application/json") as (_, chunks):
            body = read_capped_now(chunks, path, MAX_JSON_BYTES)
        return _decode(body, path)

    def _too_long(self, path: str) -> DownloaderTimeout:
        return DownloaderTimeout(f"downloader took longer than {self.timeout:g} s on {path}")

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

    # The album step's calls block: the processor makes all three and ingests their answers in
    # one worker thread (see `actors.download_steps`); `stopped` is `in_worker`'s.

    def album_now(self, album_id: str, stopped: Callable[[], bool]) -> AlbumMeta:
        path = f"/album/{_valid_id(album_id, 'album')}"
        return parse.parse_album(self._get_json_now(path, stopped), album_id)

    def album_tracks_now(self, album_id: str, stopped: Callable[[], bool]) -> list[TrackRecord]:
        path = f"/album/{_valid_id(album_id, 'album')}/tracks"
        return parse.parse_tracks(self._get_json_now(path, stopped), album_id)

    def artist_now(self, artist_id: str, stopped: Callable[[], bool]) -> ArtistMeta:
        path = f"/artist/{_valid_id(artist_id, 'artist')}"
        return parse.parse_artist(self._get_json_now(path, stopped), artist_id)

    def receive_now(
        self,
        path_for: Callable[[str], Path],
        url_path: str,
        max_bytes: int,
        stopped: Callable[[], bool],
    ) -> Received:
        """Blocking: receive `url_path` for the file `path_for(media_type)` names, not yet
        published; run it in a worker thread (`downloader_stream.in_worker`).

        `path_for` gets the Content-Type without parameters and raises `DownloaderParseError`
        (or ValueError) for a type it does not accept. The caller must `publish` or `discard`
        the result; if this fails, the temporary file is removed. Stops with
        `downloader_stream.Stopped` at the first chunk after `stopped()` turns True.
        """
        with self._open_now(url_path, stopped) as (response, chunks):
            media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            try:
                final = path_for(media_type)
            except ValueError as exc:
                raise DownloaderParseError(f"cannot store {url_path}: {exc}") from exc
            expected = content_length(response, url_path)
            if expected is not None and expected > max_bytes:
                raise DownloaderTooLarge(f"too large: {url_path} is {expected} bytes")
            body = receive_body(final, chunks, url_path, max_bytes, expected)
            body.media_type = media_type
            return body


class _Deadline:
    """The time limit of one whole request made from a worker thread.

    A body that trickles is caught as its chunks arrive (`passed`); one that stalls is cut at
    the deadline by a timer that shuts the connection's socket down, which ends the blocked
    read at once (the transport's read timeout alone would wait a full timeout from the last
    byte). `expired` then tells the failure that follows from a real one.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._timer: threading.Timer | None = None

    def passed(self) -> bool:
        if time.monotonic() >= self.at:
            self.expired = True
        return self.expired

    def enforce(self, response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:  # a test transport: the chunks' checks are all there is
            return
        self._timer = threading.Timer(max(0.0, self.at - time.monotonic()), self._cut, [sock])
        self._timer.daemon = True
        self._timer.start()

    def _cut(self, sock: socket.socket) -> None:
        self.expired = True
        with suppress(OSError):  # already closed: nothing left to cut
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _decode(body: bytes, path: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise DownloaderParseError(f"invalid JSON from {path}: {exc}") from exc
    except RecursionError:  # a per-item failure like any bad answer, not a bug
        raise DownloaderParseError(f"JSON from {path} is nested too deeply") from None


def _capped(chunks: Iterator[bytes], cap: int) -> Iterator[bytes]:
    """The chunks up to `cap` bytes in all: an error body is only read for its message."""
    size = 0
    for chunk in chunks:
        yield chunk[: max(0, cap - size)]
        size += len(chunk)
        if size >= cap:
            return


def _timeout(path: str) -> DownloaderTimeout:
    return DownloaderTimeout(f"downloader timed out on {path}")


def _unreachable(path: str, exc: Exception) -> DownloaderConnectionError:
    return DownloaderConnectionError(f"cannot reach the downloader for {path}: {exc}")
