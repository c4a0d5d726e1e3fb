"""The success bodies of the download routes (SPEC §8.2, §8.3, §8.10), for `document_response`.

Documentation only, as the bodies in `api.openapi`: the handlers build their answers from the
queue's stores (`storage.queue.model.item_json`, `storage.queue.reads.shape`) and return them
as they are; these models describe them in `/openapi.json`, and the fuzzer checks the answers
against them (tests/security/test_fuzz_openapi.py). Every body is open (pydantic's default:
unknown fields allowed), so a field added later does not break a client validating with the
document. A field is nullable exactly where the code can answer null. The other areas' bodies
follow the same rules: `api.bodies_catalog`, `api.bodies_admin`, `api.bodies_notifications`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from storage.queue import AuditEvent, ContentType, ErrorType, Source, Status

# -- SPEC §8.3: search, limits and requests ----------------------------------------------------


class SearchResult(BaseModel):
    """A downloader search result, marked with what this server already has or has queued."""

    id: str
    type: str | None
    name: str | None
    artist_name: str | None
    image_url: str | None
    year: int | None
    in_catalog: bool
    in_queue: bool


class SearchAnswer(BaseModel):
    results: list[SearchResult]
    total: int


class DiscographyAnswer(BaseModel):
    artist: SearchResult
    albums: list[SearchResult]


class UserLimitStatus(BaseModel):
    """A user's own allowance; `resets_at` is null while only the queue size binds."""

    requests_today: int
    max_per_day: int
    in_queue: int
    max_queue: int
    can_request: bool
    resets_at: int | None


class CapacityStatus(BaseModel):
    """The server's album capacity this UTC hour and day."""

    albums_this_hour: int
    max_per_hour: int
    albums_today: int
    max_per_day: int
    at_capacity: bool
    resets_at: int


class LimitsAnswer(BaseModel):
    user: UserLimitStatus
    # `global` is a Python keyword: the field is named by its alias.
    global_: CapacityStatus = Field(alias="global")


class SkippedAlbum(BaseModel):
    album_id: str
    reason: str


class DiscographyRequested(BaseModel):
    """The albums queued for an artist, and those skipped with why."""

    request_ids: list[str]
    albums_queued: int
    albums_skipped: int
    skipped: list[SkippedAlbum]
    status: Literal["PENDING", "NOTHING_QUEUED"]


# -- SPEC §8.2: the QueueItem ------------------------------------------------------------------


class Progress(BaseModel):
    """An album's children by state."""

    total_children: int
    completed: int
    failed: int
    pending: int
    in_progress: int
    retry_waiting: int
    cancelled: int


class Wait(BaseModel):
    """Why an item is not moving, and until when if that is known."""

    reason: Literal["paused", "capacity", "retry", "downloader_busy", "queued"]
    until: int | None


class Failure(BaseModel):
    """What a failure means to the person who asked, and what they can do."""

    reason: str
    hint: str


class QueueItem(BaseModel):
    """One queue item. Top-level items also carry `progress` and `queue_position` (a child has
    neither); times are unix seconds."""

    id: str
    parent_id: str | None
    status: Status
    priority: int
    content_type: ContentType
    content_id: str
    content_name: str | None
    artist_name: str | None
    request_source: Source
    requested_by: str | None
    created_at: int
    started_at: int | None
    completed_at: int | None
    last_attempt_at: int | None
    next_retry_at: int | None
    retry_count: int
    max_retries: int
    error_type: ErrorType | None
    error_message: str | None
    bytes_downloaded: int | None
    processing_duration_ms: int | None
    failure: Failure | None
    progress: Progress | None = None
    queue_position: int | None = None
    wait: Wait | None
    estimated_start_at: int | None
    estimated_completion_at: int | None


class QueueItemWithChildren(QueueItem):
    """A top-level item with its children, in claim order."""

    children: list[QueueItem]


class MyRequests(BaseModel):
    requests: list[QueueItem]
    stats: UserLimitStatus


# -- SPEC §8.10: the admin's view of the queue -------------------------------------------------


class ItemPage(BaseModel):
    items: list[QueueItem]
    total: int


class QueueCounts(BaseModel):
    pending: int
    in_progress: int
    retry_waiting: int
    completed_today: int
    failed_today: int


class Processing(BaseModel):
    """Over the last 24 hours; null when nothing finished in them."""

    average_duration_ms: int | None
    success_rate_percent: float | None


class PauseState(BaseModel):
    """Whether the queue is paused, by whom, since when and why (null while running)."""

    paused: bool
    paused_by: str | None
    paused_at: int | None
    reason: str | None


class QueueStats(BaseModel):
    queue: QueueCounts
    capacity: CapacityStatus
    processing: Processing
    paused: PauseState


class Resumed(BaseModel):
    paused: Literal[False]


class ActivityCounts(BaseModel):
    albums: int
    tracks: int
    images: int
    bytes: int
    failed: int


class ActivityHour(ActivityCounts):
    """One UTC hour, by its first second."""

    hour: int


class Activity(BaseModel):
    """One bucket per UTC hour, oldest first (hours without activity as zeros), and totals."""

    hourly: list[ActivityHour]
    totals: ActivityCounts


class AuditEntry(BaseModel):
    """One audit log entry; `details` depends on the event."""

    id: int
    timestamp: int
    event_type: AuditEvent
    queue_item_id: str | None
    content_type: ContentType | None
    content_id: str | None
    user: str | None
    request_source: Source | None
    details: dict[str, Any] | None


class AuditPage(BaseModel):
    """Entries newest first."""

    entries: list[AuditEntry]
    total_count: int
    has_more: bool


class ItemHistory(BaseModel):
    """An item and every audit entry about it, oldest first."""

    queue_item: QueueItem
    events: list[AuditEntry]


class BulkOutcome(BaseModel):
    """How many items the filter selects, and how many the action changes (a dry run changes
    nothing and says how many it would)."""

    matched: int
    changed: int
