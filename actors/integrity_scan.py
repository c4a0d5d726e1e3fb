"""The integrity scan of SPEC §8.9, as blocking steps the watchdog runs in worker threads.

Each media folder is listed once (`os.listdir`) and its names handed to SQLite as one JSON array;
one statement per kind (`CatalogStore.missing_files`) returns only the catalog rows whose file is
not among them. The comparison thus runs in SQLite's C code, during which the sqlite3 module
releases the interpreter lock, instead of in Python per row while holding it (see
`actors.watchdog` for why that matters); normally nothing is missing and almost no Python runs
per row. Listings and statements run in a new thread of the idle scheduling class, so that what
runs without the lock does not compete with the event loop for a core. Which files count as
present:

- a track has audio iff the catalog records an `audio_format` for it and `audio/<id>.<format>`
  exists: exactly the file the stream route serves. A track never downloaded (format NULL) is
  missing too, and so is one whose file has another extension than the catalog says;
- an image is present iff `images/<id>.jpg` exists (`.part` leftovers never count).

A missing folder is an error, not "everything is missing": an unmounted media disk must fail the
scan rather than queue a repair for every file in the catalog. Each missing file is reported once
per scan even when several albums or artists share it. A repair is skipped when a non-terminal
item already exists for that content, or (tracks, covers) for the album it belongs to, whose
download will write the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from storage.queue_admin import Repair
from storage.queue_schema import ContentType

ALBUM = ContentType.ALBUM.value
# Per kind of file: the catalog comparison that finds it missing, and the folder it lives in.
KINDS: tuple[tuple[ContentType, str, str], ...] = (
    (ContentType.TRACK_AUDIO, "track_audio", "audio"),
    (ContentType.ALBUM_IMAGE, "album_images", "images"),
    (ContentType.ARTIST_IMAGE, "artist_images", "images"),
)
# Bytes a media file's name never holds (ids and extensions are ASCII letters and digits) and
# JSON would have to escape: controls, quote, backslash, anything not ASCII.
UNSAFE_NAME_BYTES = bytes(range(0x20)) + b'"\\' + bytes(range(0x80, 0x100))
# Names turned into JSON text per step. A C call holds the interpreter lock to its end, and a
# thread that computes keeps it up to the switch interval (5 ms) before another may take it:
# the listing is encoded in slices of well under a millisecond each, with the lock let go
# after each one, so the event loop never waits behind the scan for long.
ENCODE_SLICE = 4096

# How often a worker waiting for a background comparison checks whether to stop it.
STOP_POLL_S = 0.02
LOWEST_PRIORITY = 19  # nice, where the idle scheduling class is refused

MissingRow = tuple[str, str | None]  # (content id, its album ids joined by commas, or None)
T = TypeVar("T")


def json_array(names: list[bytes]) -> str:
    """The names (file names as bytes) as a JSON array of strings, encoded slice by slice
    (blocking; see `ENCODE_SLICE`)."""
    parts = []
    for start in range(0, len(names), ENCODE_SLICE):
        parts.append(_json_items(names[start : start + ENCODE_SLICE]))
        time.sleep(0)  # let the interpreter lock go
    return "[" + ",".join(part for part in parts if part) + "]"


def _json_items(names: list[bytes]) -> str:
    """`json.dumps` of the names without its brackets. When no name needs escaping, as is the
    case in a media folder, a few calls over one joined string instead of an encoder call per
    name (100,000 names: about 40 ms instead of 65 in all)."""
    if not names:
        return ""
    joined = b"/".join(names)  # no name holds a "/"
    if len(joined.translate(None, UNSAFE_NAME_BYTES)) == len(joined):
        return '"' + joined.decode("ascii").replace("/", '","') + '"'
    return json.dumps([os.fsdecode(name) for name in names])[1:-1]


def list_folder(folder: Path) -> str:
    """The names in `folder` as a JSON array (blocking). Raises OSError if the folder is missing:
    the scan must fail rather than find every file missing. Listed as bytes: no decoding per
    name."""
    return json_array(os.listdir(os.fsencode(folder)))


def lower_priority() -> None:
    """Put the calling thread, and it alone (Linux schedules each thread on its own), in the
    idle scheduling class, or failing that at the lowest nice value; elsewhere, or if refused,
    leave it as it is.

    Idle, not merely nice 19: the kernel lets a waking thread of normal priority preempt an idle
    one at once, and counts a core that runs only idle threads as free when it places a waking
    thread. At nice 19 the scan still ran out its time slice before the event loop's thread or
    an API worker thread got the core back (API p99 during a scan over idle, 4 alternated runs
    each: 1.92-2.56 at nice 19, 1.45-1.74 idle). An idle thread still gets a small share of a
    busy machine, so a scan is slowed down by load, never stopped by it."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread, LOWEST_PRIORITY)


def in_background_thread(fn: Callable[[Callable[[], bool]], T], stop: Callable[[], bool]) -> T:
    """Run `fn(stopped)` in a new thread of the lowest CPU priority (`lower_priority`) and wait
    for it (blocking); `stopped()` turns True once `stop()`, which the waiting thread polls, does.

    A comparison runs without the interpreter lock, truly in parallel with the event loop, so at
    normal priority it competes with the loop (and the API's worker threads) for a core: on the
    2-core benchmark machine, API p99 during a scan was 2.7x idle at normal priority, about 2x at
    nice 19 and 1.6x in the idle class, which takes only the CPU the daemon and its neighbours
    leave idle. A new thread each time because an unprivileged process cannot raise a thread's
    priority back, and trio reuses its worker threads for everything else."""
    stopped = threading.Event()
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        lower_priority()
        try:
            results.append(fn(stopped.is_set))
        except BaseException as exc:  # re-raised in the waiting thread
            errors.append(exc)

    thread = threading.Thread(target=body, name="integrity-scan", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(STOP_POLL_S)
        if stop():
            stopped.set()
    if errors:
        raise errors[0]
    return results[0]


@dataclass
class ScanState:
    """What a scan knows while it runs: the active queue, the files seen, and its tallies."""

    active: set[tuple[str, str]]
    seen: set[tuple[str, str]] = field(default_factory=set)
    missing: dict[ContentType, int] = field(
        default_factory=lambda: dict.fromkeys((kind for kind, _, _ in KINDS), 0)
    )
    queued: int = 0
    skipped: int = 0

    def consider(self, repair: Repair) -> bool:
        """Tally one missing file; True if a repair should be attempted."""
        key = (repair.content_type.value, repair.content_id)
        if key in self.seen:
            return False  # another album or artist shares this file
        self.seen.add(key)
        self.missing[repair.content_type] += 1
        if key in self.active or any((ALBUM, album) in self.active for album in repair.album_ids):
            self.skipped += 1
            return False
        return True

    def repairs(self, content_type: ContentType, rows: Sequence[MissingRow]) -> list[Repair]:
        """The repairs to attempt for rows whose file is missing, each file tallied once."""
        candidates = (
            Repair(content_type, content, tuple(albums.split(",")) if albums else ())
            for content, albums in rows
        )
        return [repair for repair in candidates if self.consider(repair)]

    def report(self, duration_ms: int) -> dict[str, Any]:
        return {
            "missing_track_audio": self.missing[ContentType.TRACK_AUDIO],
            "missing_album_images": self.missing[ContentType.ALBUM_IMAGE],
            "missing_artist_images": self.missing[ContentType.ARTIST_IMAGE],
            "items_queued": self.queued,
            "items_skipped": self.skipped,
            "scan_duration_ms": duration_ms,
        }
