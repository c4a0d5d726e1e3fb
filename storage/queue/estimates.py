"""Estimated times (SPEC §8.2 rev 2): `estimated_start_at` of a PENDING top-level item and
`estimated_completion_at` of an IN_PROGRESS album, in unix seconds. Estimates, not promises.

They are made from how long recent work took: the median `processing_duration_ms` of the last
RECENT completions of each kind (an album from its start to its last child, a file from its
claim to its record), read through the `queue_done_kind` index, so they cost the same however
many items have completed. A file kind without history borrows the median of the other files.
An estimate is null without the history it needs, and every estimate is null while the queue
is paused (nobody knows when it will resume).

- An album in progress completes after what is left of it: the median of each child not done
  (for the child being fetched, what is left of its median), and not before its latest retry is
  due plus that child's median. Before its children exist: its start plus the album median.
- A PENDING item at position k starts once the work in progress is done (what is left of every
  IN_PROGRESS top-level item, as above) and the k - 1 items ahead have taken the median of its
  own kind each: the queue keeps kinds together by priority, users' albums behind albums and
  the watchdog's repairs behind repairs. An album also waits for the global capacity: album
  starts are laid out window by window against what is left of this hour's and this day's
  budget (`album_start`), for EXACT_STEPS windows, then at the long-run rate.
"""

from __future__ import annotations

import json
import math
import statistics
from functools import cached_property
from typing import NamedTuple

from storage.queue.model import DAY, HOUR, ContentType, Row, Status
from storage.queue.waits import Snapshot, waits_on_children

RECENT = 50  # completions per kind the medians are taken over
EXACT_STEPS = 64  # capacity windows laid out one by one before the long-run rate takes over
_FILES = (ContentType.TRACK_AUDIO, ContentType.ALBUM_IMAGE, ContentType.ARTIST_IMAGE)
_KINDS = (ContentType.ALBUM, *_FILES)
# The newest completions of each kind, one bounded index read per kind, in one statement (one
# call into SQLite for the page that shows them, not one per kind).
_RECENT_OF_KIND = """SELECT * FROM (SELECT content_type, processing_duration_ms
    FROM queue_items INDEXED BY queue_done_kind
    WHERE status = 'COMPLETED' AND content_type = ? ORDER BY completed_at DESC LIMIT ?)"""
RECENT_DURATIONS = " UNION ALL ".join([_RECENT_OF_KIND] * len(_KINDS))
RECENT_ARGS = tuple(arg for kind in _KINDS for arg in (kind.value, RECENT))
# The top-level work in progress: albums (with their children or not yet) and repairs. Few rows.
_WORKING = """SELECT * FROM queue_items INDEXED BY queue_status
    WHERE status = 'IN_PROGRESS' AND parent_id IS NULL"""
_OPEN_CHILDREN = """SELECT parent_id, content_type, status, last_attempt_at, next_retry_at
    FROM queue_items WHERE parent_id IN (SELECT value FROM json_each(?))
    AND status IN ('PENDING', 'IN_PROGRESS', 'RETRY_WAITING')"""


class Left(NamedTuple):
    """What is left of an item in progress."""

    work: float  # seconds of the processor's time
    not_before: float  # when it can be done at the earliest (a retry that is not due yet)


class Estimates:
    """The estimates of the items of one shaping, against one `Snapshot`; what they share (the
    medians, the work in progress) is read at most once."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def start_at(self, row: Row, position: int | None) -> int | None:
        """`estimated_start_at` of a PENDING top-level item at `position`; None otherwise."""
        if position is None or self.snap.paused:
            return None
        busy, each = self.busy_work, self.secs(row["content_type"])
        if busy is None or each is None:
            return None
        first = self.snap.now + busy
        if row["content_type"] != ContentType.ALBUM:
            return round(first + (position - 1) * each)
        room, dm = self.snap.capacity, self.snap.dm
        start = album_start(
            first, position - 1, each, (room["albums_this_hour"], room["albums_today"]),
            self.snap.now, (dm.max_albums_per_hour, dm.max_albums_per_day),
        )  # fmt: skip
        return None if start is None else round(start)

    def completion_at(self, row: Row) -> int | None:
        """`estimated_completion_at` of an IN_PROGRESS album; None for any other item."""
        if row["status"] != Status.IN_PROGRESS or row["parent_id"] is not None:
            return None
        if row["content_type"] != ContentType.ALBUM or self.snap.paused:
            return None
        left = self.left(row)
        return None if left is None else round(max(self.snap.now + left.work, left.not_before))

    def secs(self, kind: str) -> float | None:
        """The median seconds of the recent completions of `kind` (for a file kind without
        any, of every file kind together); None without history."""
        samples = self._samples.get(kind) or []
        if not samples and kind != ContentType.ALBUM:
            samples = [s for k in _FILES for s in self._samples.get(k.value, [])]
        return statistics.median(samples) if samples else None

    def left(self, row: Row) -> Left | None:
        """What is left of the IN_PROGRESS top-level item `row`; None without history."""
        now = self.snap.now
        if not waits_on_children(row):
            each = self.secs(row["content_type"])
            # An album's median runs from its start, a file's from its attempt's claim.
            album = row["content_type"] == ContentType.ALBUM
            since = row["started_at"] if album else row["last_attempt_at"]
            return None if each is None else Left(max(0.0, each - (now - (since or now))), now)
        work, not_before = 0.0, float(now)
        for child in self._open_children.get(row["id"], []):
            each = self.secs(child["content_type"])
            if each is None:
                return None
            if child["status"] == Status.IN_PROGRESS:
                each = max(0.0, each - (now - (child["last_attempt_at"] or now)))
            elif child["status"] == Status.RETRY_WAITING and child["next_retry_at"]:
                not_before = max(not_before, child["next_retry_at"] + each)
            work += each
        return Left(work, not_before)

    @cached_property
    def busy_work(self) -> float | None:
        """Seconds of the processor's time the work in progress still needs."""
        total = 0.0
        for row in self._working:
            left = self.left(row)
            if left is None:
                return None
            total += left.work
        return total

    @cached_property
    def _samples(self) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {kind.value: [] for kind in _KINDS}
        for kind, ms in self.snap.conn.execute(RECENT_DURATIONS, RECENT_ARGS):
            if ms is not None:
                samples[kind].append(ms / 1000)
        return samples

    @cached_property
    def _working(self) -> list[Row]:
        return list(self.snap.conn.execute(_WORKING))

    @cached_property
    def _open_children(self) -> dict[str, list[Row]]:
        albums = [row["id"] for row in self._working if waits_on_children(row)]
        found: dict[str, list[Row]] = {album: [] for album in albums}
        if albums:
            for child in self.snap.conn.execute(_OPEN_CHILDREN, (json.dumps(albums),)):
                found[child["parent_id"]].append(child)
        return found


def album_start(
    first: float,
    ahead: int,
    each: float,
    used: tuple[int, int],
    now: int,
    budget: tuple[int, int],
) -> float | None:
    """When an album starts that has `ahead` albums before it, the first of them no earlier
    than `first` and one every `each` seconds, at most `budget` = (per hour, per day) starting
    in a UTC hour and day; `used` = the albums already started this hour and day at `now`.
    None when the budget allows no album at all."""
    per_hour, per_day = budget
    if per_hour <= 0 or per_day <= 0:
        return None
    t = first
    hour_left = per_hour - used[0] if t // HOUR == now // HOUR else per_hour
    day_left = per_day - used[1] if t // DAY == now // DAY else per_day
    for _ in range(EXACT_STEPS):
        if day_left <= 0 or hour_left <= 0:  # wait for the binding window to reset
            later = _window_end(t, DAY if day_left <= 0 else HOUR)
            hour_left, day_left = per_hour, per_day if later // DAY != t // DAY else day_left
            t = later
            continue
        end = _window_end(t, HOUR)
        fits = math.ceil((end - t) / each) if each > 0 else hour_left
        starts = min(hour_left, day_left, fits)  # album starts from t on, in this hour
        if ahead < starts:
            return t + ahead * each
        ahead -= starts
        later = t + starts * each
        hour_left = per_hour if later >= end else hour_left - starts
        day_left = per_day if later // DAY != t // DAY else day_left - starts
        t = later
    return t + ahead * max(each, HOUR / per_hour, DAY / per_day)


def _window_end(t: float, window: int) -> float:
    return float((t // window + 1) * window)
