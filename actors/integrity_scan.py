"""The integrity scan of SPEC §8.9, as blocking steps the watchdog runs in worker threads.

The media folders are listed once each (one `os.scandir` listing, consumed in slices) into sets,
and the catalog is then read in keyset pages and compared against those sets in memory: one
directory listing instead of a `stat` per file, and no slice or page holds the interpreter for
long (see `actors.watchdog` for why that matters). Which files count as present:

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

import itertools
import os
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.files import AUDIO_MEDIA_TYPES
from storage.queue_admin import Repair
from storage.queue_schema import ContentType

ALBUM = ContentType.ALBUM.value
AUDIO_EXTENSIONS = frozenset(AUDIO_MEDIA_TYPES)
IMAGE_EXTENSIONS = frozenset({"jpg"})


def take_names(entries: Iterator[os.DirEntry[str]], extensions: Container[str],
               found: set[str], limit: int) -> bool:  # fmt: skip
    """Add the names of up to `limit` more listed files with an allowed extension to `found`;
    True once the listing is exhausted (blocking; one slice of one `os.scandir` listing)."""
    taken = 0
    for entry in itertools.islice(entries, limit):
        taken += 1
        if entry.name.rpartition(".")[2] in extensions:
            found.add(entry.name)
    return taken < limit


@dataclass
class ScanState:
    """What a scan knows while it runs: the listing, the active queue, and its tallies."""

    audio: set[str]  # names of the files in audio/ with an allowed extension
    images: set[str]  # names of the .jpg files in images/
    active: set[tuple[str, str]]
    seen: set[tuple[str, str]] = field(default_factory=set)
    missing: dict[ContentType, int] = field(
        default_factory=lambda: dict.fromkeys(
            (ContentType.TRACK_AUDIO, ContentType.ALBUM_IMAGE, ContentType.ARTIST_IMAGE), 0
        )
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
        if key in self.active or (repair.album_id and (ALBUM, repair.album_id) in self.active):
            self.skipped += 1
            return False
        return True

    def report(self, duration_ms: int) -> dict[str, Any]:
        return {
            "missing_track_audio": self.missing[ContentType.TRACK_AUDIO],
            "missing_album_images": self.missing[ContentType.ALBUM_IMAGE],
            "missing_artist_images": self.missing[ContentType.ARTIST_IMAGE],
            "items_queued": self.queued,
            "items_skipped": self.skipped,
            "scan_duration_ms": duration_ms,
        }


Row = tuple[Any, ...]
Classify = Callable[[ScanState, Sequence[Row]], list[Repair]]


def _repairs(state: ScanState, candidates: Sequence[Repair]) -> list[Repair]:
    return [r for r in candidates if state.consider(r)]


# Each page is filtered on presence first with plain set lookups: nearly every row is present,
# and the scan shares the interpreter with the event loop, so the common case must be cheap.


def classify_tracks(state: ScanState, page: Sequence[Row]) -> list[Repair]:
    audio, kind = state.audio, ContentType.TRACK_AUDIO
    missing = [(t, a) for t, fmt, a in page if fmt is None or f"{t}.{fmt}" not in audio]
    return _repairs(state, [Repair(kind, track, album) for track, album in missing])


def classify_album_images(state: ScanState, page: Sequence[Row]) -> list[Repair]:
    images, kind = state.images, ContentType.ALBUM_IMAGE
    missing = [(a, i) for a, i in page if f"{i}.jpg" not in images]
    return _repairs(state, [Repair(kind, image, album) for album, image in missing])


def classify_artist_images(state: ScanState, page: Sequence[Row]) -> list[Repair]:
    images, kind = state.images, ContentType.ARTIST_IMAGE
    return _repairs(state, [Repair(kind, i) for _, i in page if f"{i}.jpg" not in images])
