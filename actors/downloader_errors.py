"""The downloader's error hierarchy: one class per `error_type` of SPEC §8.6.

Everything that can go wrong talking to the downloader or writing what it sends is translated
into one of these at the client boundary (`raise DownloaderTimeout(...) from exc`), so callers
catch `DownloaderError` and record `error_type` / `message` / `retry_after` on the queue item;
whether to retry is the queue's decision (`storage.queue`), not the client's.
"""

from __future__ import annotations

from storage.queue_schema import ErrorType


class DownloaderError(Exception):
    """A failed downloader call. The base class itself stands for an `unknown` failure."""

    error_type: ErrorType = ErrorType.UNKNOWN
    # True where asking again would only bring the same answer: failed at once, whatever its
    # error type's rule (SPEC §8.6).
    permanent: bool = False

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class DownloaderNotFound(DownloaderError):
    """404: the content does not exist upstream (not retried)."""

    error_type = ErrorType.NOT_FOUND


class DownloaderBadRequest(DownloaderError):
    """400 or another 4xx: the request itself is wrong (not retried)."""

    error_type = ErrorType.BAD_REQUEST


class DownloaderRateLimited(DownloaderError):
    """429: busy; `retry_after` holds the server's Retry-After in seconds, if it sent one."""

    error_type = ErrorType.RATE_LIMITED


class DownloaderConnectionError(DownloaderError):
    """Refused or reset connection, or a 5xx other than 504."""

    error_type = ErrorType.CONNECTION


class DownloaderTimeout(DownloaderError):
    """A connect/read/pool timeout, or a 504."""

    error_type = ErrorType.TIMEOUT


class DownloaderParseError(DownloaderError):
    """Invalid JSON, missing fields, bad ids, an unsupported content type, a truncated or
    oversized body."""

    error_type = ErrorType.PARSE


class DownloaderTooLarge(DownloaderParseError):
    """A media body over `max_file_bytes`: not retried, the same bytes would come again."""

    permanent = True


class StorageFailure(DownloaderError):
    """Writing the download to disk failed (disk full, permission denied, I/O error)."""

    error_type = ErrorType.STORAGE
