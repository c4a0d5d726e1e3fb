"""The recording of one file beside the download of the next: a cancel abandons the item being
recorded as it does the one downloading, a shutdown puts both back, a failure in a recording is
recorded on its item while the next one downloads, and nothing is recorded out of claim order.

The rig is `tests.actors.test_processor`'s (the fake downloader in-process, the autojump clock),
with a media folder whose every call waits before it begins (`SlowDisk`), so that a file's
recording takes virtual time while the next file downloads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import trio

from actors.messages import Hook
from fake_downloader import Knobs, audio_bytes
from storage.offload import Offload
from tests.actors.test_processor import SPEC, Rig, rig
from tests.actors.test_processor_cancel import BIG, RATE, cancel, parts, tracks_of
from tests.support.disk import full_for

P = ParamSpec("P")
T = TypeVar("T")

SLOW_S = 2.0  # each call of the slow media folder waits this long before it begins


class SlowDisk(Offload):
    """The media folder's calls inline (the autojump clock), each waiting `seconds` of virtual
    time before it begins, as a slow disk would make them; a call that has begun runs whole."""

    def __init__(self, seconds: float) -> None:
        super().__init__(1, inline=True)
        self.seconds = seconds

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        await trio.sleep(self.seconds)
        return await super().run(fn, *args, **kwargs)


async def into_recording(r: Rig) -> None:
    """Wait until the first track is being recorded (its publishing waits on the slow disk,
    its temporary file on disk) while the second downloads."""
    knobs = r.knobs
    await knobs.wait_until(lambda: knobs.count("audio") == 2 and knobs.active_audio > 0)
    assert len(parts(r)) == 1, "the first track's temporary file should be on disk"
    assert not any(name.endswith(".flac") for name in r.media_files())  # none published


async def test_a_cancel_abandons_the_file_being_recorded_and_the_one_downloading(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(audio_bytes_per_sec=RATE)
    async with rig(tmp_path, knobs=knobs, spec=BIG, disk=SlowDisk(SLOW_S)) as r:
        album_item = await r.request_album()
        await into_recording(r)
        started = trio.current_time()
        assert len(await cancel(r, album_item)) == BIG.tracks_per_album + 3  # album, children
        await knobs.wait_until(lambda: knobs.active_audio == 0)
        assert trio.current_time() - started < 0.1  # the download stopped at once
        await trio.sleep(SLOW_S + 1)  # the temporary files' removal, a slow disk's call each
        assert parts(r) == [] and r.media_files() == []  # nothing published, nothing left
        first, second, third = tracks_of(r, album_item)
        assert [first["status"], second["status"], third["status"]] == ["CANCELLED"] * 3
        assert r.catalog.track_audio_format(first["content_id"]) is None
        assert r.processed("TRACK_AUDIO", "cancelled") == 2
        released = r.rows("SELECT 1 FROM audit_log WHERE event_type = 'RECOVERED_AFTER_RESTART'")
        assert released == []  # left CANCELLED, not put back
        await trio.sleep(60)
        assert knobs.count("audio") == 2  # nothing more fetched for it


async def test_shutdown_puts_back_the_file_being_recorded_and_the_one_downloading(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(audio_bytes_per_sec=RATE)
    grace = 0.2
    slow = SlowDisk(SLOW_S)
    async with rig(tmp_path, knobs=knobs, spec=BIG, shutdown_timeout=grace, disk=slow) as r:
        album_item = await r.request_album()
        await into_recording(r)
        started = trio.current_time()
        r.shutdown.set()
        with trio.fail_after(5):
            await r.stopped.wait()
        # The grace, then the temporary files removed (one call of the slow disk each).
        assert trio.current_time() - started <= grace + SLOW_S + 0.1
        first, second, _ = tracks_of(r, album_item)
        for track in (first, second):
            assert (track["status"], track["retry_count"]) == ("PENDING", 0)
            last = r.last_audit(track["id"])
            assert last["event_type"] == "RECOVERED_AFTER_RESTART"
            assert "shutdown" in last["details"]
        assert r.item(album_item)["status"] == "IN_PROGRESS"
        assert r.media_files() == []  # nothing published, no temporary file left
        assert r.catalog.track_audio_format(first["content_id"]) is None


async def test_a_failed_recording_is_recorded_on_its_item_while_the_next_downloads(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(audio_bytes_per_sec=SPEC.audio_bytes)  # a second per track

    def full_catalog(r: Rig) -> None:  # the first track's mark finds the catalog's disk full
        mark = full_for(1, r.catalog.set_tracks_audio)
        r.catalog.set_tracks_audio = mark  # type: ignore[method-assign]

    disk = SlowDisk(0.5)
    async with rig(tmp_path, knobs=knobs, disk=disk, before_start=full_catalog) as r:
        album_item = await r.request_album()
        await trio.sleep(30)  # every file tried once; the retry is a minute away on the wall
        first, second, third = tracks_of(r, album_item)
        assert (first["status"], first["retry_count"], first["error_type"]) == (
            "RETRY_WAITING", 1, "storage",
        )  # fmt: skip
        assert "database or disk is full" in first["error_message"]
        assert (second["status"], third["status"]) == ("COMPLETED", "COMPLETED")
        # Its failure was recorded after the second track had begun: in claim order, each
        # outcome after the one before, the next download beside it.
        entries = [
            (e["queue_item_id"], e["event_type"])
            for e in r.rows("SELECT * FROM audit_log ORDER BY id")
            if e["queue_item_id"] in (first["id"], second["id"])
        ]
        assert entries.index((second["id"], "DOWNLOAD_STARTED")) < entries.index(
            (first["id"], "RETRY_SCHEDULED")
        )
        assert entries.index((first["id"], "RETRY_SCHEDULED")) < entries.index(
            (second["id"], "DOWNLOAD_COMPLETED")
        )
        assert r.failures("TRACK_AUDIO", "storage") == 1
        assert r.processed("TRACK_AUDIO", "retry") == 1
        # Published, not recorded: the retry downloads it again and records it.
        assert r.media.audio_path(first["content_id"], "flac").exists()
        await r.later(60)
        await r.wait_hook(Hook.OnDownloadComplete, within=30)
        assert r.item(album_item)["status"] == "COMPLETED"
        for track in tracks_of(r, album_item):
            path = r.media.audio_path(track["content_id"], "flac")
            assert path.read_bytes() == audio_bytes(SPEC, track["content_id"])
            assert r.catalog.track_audio_format(track["content_id"]) == "flac"
        assert parts(r) == []
