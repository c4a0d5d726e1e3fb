"""Why processing a queue item failed: one tree, one class per `error_type` of SPEC §8.6.

`ItemFailure` is the base; `DownloaderError` and its subclasses are what the downloader or its
answers caused, `StorageFailure` what the disk or the catalog's database refused. Each is made
at a boundary from what the library raised (`raise DownloaderTimeout(...) from exc` in the
client, `StorageFailure` from an `OSError` or a full disk in the processor's steps), so the
processor catches `ItemFailure` and records `error_type` / `message` / `retry_after` on the
item. Whether to retry is the queue's decision (`storage.queue`), but for `permanent`.
"""

from __future__ import annotations

from storage.queue import ErrorType


class ItemFailure(Exception):
    """A failed attempt at an item. The base class itself stands for an `unknown` failure."""

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


class DownloaderError(ItemFailure):
    """The downloader failed or answered what cannot be used; the base for an odd status."""


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
    """A connect/read/pool timeout, a 504, or a request past its deadline."""

    error_type = ErrorType.TIMEOUT


class DownloaderParseError(DownloaderError):
    """Invalid JSON, missing fields, bad ids, an unsupported content type, a truncated body."""

    error_type = ErrorType.PARSE


class DownloaderTooLarge(DownloaderParseError):
    """A body over its cap: not retried, the same bytes would come again."""

    permanent = True


class StorageFailure(ItemFailure):
    """Writing what was downloaded failed: disk full, permission denied, I/O error, or a
    catalog write the disk refused."""

    error_type = ErrorType.STORAGE
