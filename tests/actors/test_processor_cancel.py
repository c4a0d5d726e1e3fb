"""Cancelling while the processor works (SPEC §8.3 rev 2): the file downloading for a cancelled
item is abandoned at once and leaves nothing behind, what was already published stays, the item
stays CANCELLED, and the album requested again fetches only what is missing.

The rig is `tests.actors.test_processor`'s (the fake downloader in-process, the autojump clock).
A cancel is done as the API does it: the store's transaction, then `InFlight.abandon` with the
ids it cancelled.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import trio

from actors.in_flight import InFlight
from actors.messages import Hook, HookFired
from fake_downloader import Knobs, audio_bytes
from storage.files import WRITE_BATCH_BYTES
from storage.queue import QueueAdminStore
from tests.actors.test_processor import DM, SPEC, Rig, rig

# Tracks big enough to reach the disk (a temporary file exists after 1 MiB), at 500 kB/s.
BIG = dataclasses.replace(SPEC, audio_bytes=WRITE_BATCH_BYTES + 400_000)
RATE = 500_000


async def cancel(r: Rig, album_item: str, *, abandon: bool = True) -> list[str]:
    """Cancel alice's request as the API does; `abandon=False` is a cancel whose word reaches
    the processor too late."""
    _, cancelled = await r.requests.db.run(r.requests.cancel_request, album_item, "alice", r.wall())
    if abandon:
        r.in_flight.abandon(cancelled.ids)
    return cancelled.ids


def tracks_of(r: Rig, album_item: str) -> list[sqlite3.Row]:
    return [k for k in r.children(album_item) if k["content_type"] == "TRACK_AUDIO"]


def parts(r: Rig) -> list[str]:
    return [name for name in r.media_files() if name.endswith(".part")]


async def into_second_track(r: Rig) -> None:
    """Wait until the first track is published and the second is well under way on disk."""
    knobs = r.knobs
    await knobs.wait_until(lambda: knobs.count("audio") == 2 and knobs.active_audio > 0)
    await trio.sleep(2.5)  # past 1 MiB of its body (in virtual time)
    assert parts(r), "the second track's temporary file should exist by now"


async def test_a_cancel_abandons_the_file_downloading_and_keeps_what_was_published(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(audio_bytes_per_sec=RATE)
    async with rig(tmp_path, knobs=knobs, spec=BIG) as r:
        album_item = await r.request_album()
        await into_second_track(r)
        started = trio.current_time()
        await cancel(r, album_item)
        await knobs.wait_until(lambda: knobs.active_audio == 0)
        assert trio.current_time() - started < 0.1  # abandoned at once, not finished
        await r.settle()
        assert parts(r) == []

        first, second, third = tracks_of(r, album_item)
        assert r.item(album_item)["status"] == "CANCELLED"
        assert [first["status"], second["status"], third["status"]] == [
            "COMPLETED", "CANCELLED", "CANCELLED",
        ]  # fmt: skip
        assert {k["status"] for k in r.children(album_item)} - {"COMPLETED"} == {"CANCELLED"}
        # What was published stays, in the catalog and on disk; nothing of the second track.
        path = r.media.audio_path(first["content_id"], "flac")
        assert path.read_bytes() == audio_bytes(BIG, first["content_id"])
        assert r.catalog.track_audio_format(first["content_id"]) == "flac"
        assert r.catalog.get_album(r.fake.album_ids[0]) is not None
        assert r.media_files() == [path.name]
        # Left CANCELLED, not released back to the queue; nothing else is fetched for it.
        released = r.rows(
            "SELECT 1 FROM audit_log WHERE event_type = 'RECOVERED_AFTER_RESTART' "
            "AND queue_item_id = ?",
            second["id"],
        )
        assert released == []
        assert r.processed("TRACK_AUDIO", "cancelled") == 1
        await trio.sleep(30)
        assert (knobs.count("audio"), knobs.count("image")) == (2, 0)
        # A cancelled album never fires OnDownloadComplete.
        assert r.hooks.statistics().current_buffer_used == 1
        assert (await r.hooks.receive()) == HookFired(Hook.OnCatalogChange)


async def test_the_album_requested_again_fetches_only_what_is_missing(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(audio_bytes_per_sec=RATE)
    async with rig(tmp_path, knobs=knobs, spec=BIG) as r:
        cancelled_item = await r.request_album()
        await into_second_track(r)
        await cancel(r, cancelled_item)
        await r.settle()
        knobs.reset_counts()

        again = await r.request_album()  # the same album: no longer in the queue
        await r.wait_hook(Hook.OnDownloadComplete, within=60)

        album = r.item(again)
        first, second, third = tracks_of(r, again)
        assert (knobs.count("audio"), knobs.count("image")) == (2, 2)  # all but the first
        assert knobs.count("album") == 1
        assert [(k["status"], k["bytes_downloaded"]) for k in (first, second, third)] == [
            ("COMPLETED", 0), ("COMPLETED", BIG.audio_bytes), ("COMPLETED", BIG.audio_bytes),
        ]  # fmt: skip
        assert album["status"] == "COMPLETED"
        assert album["bytes_downloaded"] == 2 * BIG.audio_bytes + 2 * BIG.image_bytes
        for track in (first, second, third):
            path = r.media.audio_path(track["content_id"], "flac")
            assert path.read_bytes() == audio_bytes(BIG, track["content_id"])
        assert parts(r) == []


async def test_a_cancel_during_the_albums_calls_ingests_nothing_further(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(latency_ms=3000)  # the album's first call is waiting for its answer
    async with rig(tmp_path, knobs=knobs) as r:
        album_item = await r.request_album()
        await knobs.wait_until(lambda: knobs.counts["album"] > 0)
        assert await cancel(r, album_item) == [album_item]
        await trio.sleep(10)  # past when the downloader would have answered
        item = r.item(album_item)
        assert (item["status"], item["children_created"]) == ("CANCELLED", 0)
        assert r.children(album_item) == []
        assert r.catalog.get_album(r.fake.album_ids[0]) is None
        assert knobs.counts["album_tracks"] == 0


async def test_a_cancel_that_comes_too_late_for_the_download_changes_nothing(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    """The processor finishes a download whose item was cancelled meanwhile: recording it
    changes nothing, resurrects nothing, and the processor goes on."""
    knobs = Knobs(audio_bytes_per_sec=SPEC.audio_bytes)  # a second per track
    async with rig(tmp_path, knobs=knobs) as r:
        album_item = await r.request_album()
        await knobs.wait_until(lambda: knobs.active_audio > 0)
        await cancel(r, album_item, abandon=False)
        await knobs.wait_until(lambda: knobs.active_audio == 0)  # the download finished
        await r.settle()
        (downloaded,) = [k for k in tracks_of(r, album_item) if k["started_at"] is not None]
        assert downloaded["status"] == "CANCELLED"
        assert r.item(album_item)["status"] == "CANCELLED"
        assert r.media.audio_path(downloaded["content_id"], "flac").exists()  # published
        other = await r.request_album(2)
        await r.wait_hook(Hook.OnDownloadComplete, within=30)
        assert r.item(other)["status"] == "COMPLETED"


async def test_an_admin_cancels_one_track_and_the_album_completes_without_it(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(audio_bytes_per_sec=RATE)
    async with rig(tmp_path, knobs=knobs, spec=BIG) as r:
        admin = QueueAdminStore(r.queue.db, DM)
        album_item = await r.request_album()
        await into_second_track(r)
        second = tracks_of(r, album_item)[1]
        _, cancelled = await admin.db.run(admin.admin_cancel, second["id"], "root", r.wall())
        assert r.in_flight.abandon(cancelled.ids)  # it was the one in flight
        await r.wait_hook(Hook.OnDownloadComplete, within=60)
        album = r.item(album_item)
        assert album["status"] == "COMPLETED"
        assert [k["status"] for k in tracks_of(r, album_item)] == [
            "COMPLETED", "CANCELLED", "COMPLETED",
        ]  # fmt: skip
        assert not r.media.audio_path(second["content_id"], "flac").exists()
        assert parts(r) == []


# -- the registry itself ----------------------------------------------------------------------


async def test_an_item_cancelled_while_it_was_being_claimed_is_abandoned_as_it_begins() -> None:
    in_flight = InFlight()
    with in_flight.claiming():
        assert in_flight.abandon(["taken"]) is False  # nobody works on it yet
    in_flight.claimed("taken")
    with in_flight.working_on("taken") as scope:
        await trio.sleep(1)
        raise AssertionError("not reached: the scope was cancelled from the start")
    assert scope.cancelled_caught
    # Outside a claim nothing is remembered, and only the item in flight is stopped.
    in_flight.abandon(["later"])
    with in_flight.working_on("later") as scope:
        assert in_flight.abandon(["another"]) is False
        assert in_flight.abandon(["later", "another"]) is True
        await trio.sleep(1)
    assert scope.cancelled_caught
    assert in_flight.abandon(["later"]) is False  # no longer in flight


async def test_a_claimed_item_is_reached_before_its_work_begins_and_beside_another() -> None:
    in_flight = InFlight()
    with in_flight.working_on("recording") as recording:
        in_flight.claimed("next")  # the task that will work on it has not begun yet
        assert in_flight.abandon(["next"]) is True
        with in_flight.working_on("next") as downloading:
            await trio.sleep(1)
            raise AssertionError("not reached: abandoned before it began")
        assert downloading.cancelled_caught
        assert not recording.cancel_called  # the item beside it goes on
        assert in_flight.abandon(["next", "recording"]) is True
        await trio.sleep(1)
    assert recording.cancelled_caught
