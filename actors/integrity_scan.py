"""The integrity scan of SPEC §8.9, as blocking steps the watchdog runs in worker threads.

Each media folder is read as it is listed (`list_folder`: `os.scandir`, a slice of names at a
time, each slice one small JSON array) straight into SQLite, which holds the names in a temporary
table and compares the catalog against it: one store call per kind
(`CatalogStore.missing_files`) returns only the catalog rows whose file is not among them. The
comparison thus runs in SQLite's C code, during which the sqlite3 module releases the
interpreter lock, instead of in Python per row while holding it (see `actors.watchdog` for why
that matters); normally nothing is missing and almost no Python runs per row. No listing is ever
held whole in the process: a million-file folder as Python names and one JSON text came to about
150 MiB at the peak, and glibc kept most of it in the worker threads' arenas after the scan.
Which files count as present:

- a track has audio iff the catalog records an `audio_format` for it and `audio/<id>.<format>`
  exists: exactly the file the stream route serves. A track never downloaded (format NULL) is
  missing too, and so is one whose file has another extension than the catalog says;
- an image is present iff `images/<id>.jpg` exists (`.part` leftovers never count).

A missing folder is an error, not "everything is missing": an unmounted media disk must fail the
scan rather than queue a repair for every file in the catalog. Each missing file is reported once
per scan even when several albums or artists share it. A repair is skipped when a non-terminal
item already exists for that content, or (tracks, covers) for the album it belongs to, whose
download will write the file. It is not queued either, and counted as `items_unavailable`, while
the content is marked unavailable: an earlier repair found the downloader no longer has it, less
than `unavailable_recheck_days` ago (`storage.queue.marks`).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.queue import ContentType, Repair

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
# Names per slice of a listing: one JSON text of a few dozen KiB, encoded in well under a
# millisecond with the interpreter lock held, then handed to SQLite, which lets the lock go while
# it stores the slice, so the event loop never waits behind the scan for long.
ENCODE_SLICE = 4096
# Names listed between two hand-overs of the interpreter lock (`_names`): about 0.1 ms.
HANDOFF_EVERY = 256


MissingRow = tuple[str, str | None]  # (content id, its album ids joined by commas, or None)


def json_array(names: list[bytes]) -> str:
    """`json.dumps` of the names (file names as bytes) as strings. When no name needs
    escaping, as is the case in a media folder, a few calls over one joined string instead of an
    encoder call per name."""
    joined = b"/".join(names)  # no name holds a "/"
    if not names or len(joined.translate(None, UNSAFE_NAME_BYTES)) != len(joined):
        return json.dumps([os.fsdecode(name) for name in names])
    return '["' + joined.decode("ascii").replace("/", '","') + '"]'


def list_folder(folder: Path) -> Iterator[str]:
    """The names in `folder` as JSON arrays of up to `ENCODE_SLICE` names each, read lazily as
    the folder yields them (blocking), so only one slice is ever held. Raises OSError at the
    first step if the folder is missing: the scan must fail rather than find every file
    missing. Listed as bytes: no decoding per name."""
    with os.scandir(os.fsencode(folder)) as entries:
        names = _names(entries)
        while chunk := list(itertools.islice(names, ENCODE_SLICE)):
            yield json_array(chunk)


def _names(entries: Iterator[os.DirEntry[bytes]]) -> Iterator[bytes]:
    """The entries' names, giving the interpreter lock away after every `HANDOFF_EVERY`.

    `os.scandir` lets the lock go while it reads each entry and takes it back at once, and
    CPython makes its holder hand it over only after 5 ms without a single release: a thread
    waiting for the lock, such as the event loop's after each of its system calls, could wait
    those 5 ms while a folder is listed. `os.sched_yield` releases the lock and leaves the CPU
    to whoever waits, so the listing pauses for them every few hundred names."""
    for count, entry in enumerate(entries, 1):
        if count % HANDOFF_EVERY == 0:
            os.sched_yield()
        yield entry.name


@dataclass
class ScanState:
    """What a scan knows while it runs: the active queue, the content given up on, the files
    seen missing, and its tallies."""

    active: set[tuple[str, str]]
    given_up: set[tuple[str, str]] = field(default_factory=set)
    seen: set[tuple[str, str]] = field(default_factory=set)
    missing: dict[ContentType, int] = field(
        default_factory=lambda: dict.fromkeys((kind for kind, _, _ in KINDS), 0)
    )
    queued: int = 0
    skipped: int = 0
    unavailable: int = 0

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
        if key in self.given_up:
            self.unavailable += 1
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
            "items_unavailable": self.unavailable,
            "scan_duration_ms": duration_ms,
        }
