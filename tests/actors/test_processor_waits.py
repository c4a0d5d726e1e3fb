"""What a requester is told while the processor works against the fake downloader: a pause
lets the file in flight finish and starts nothing more until the resume, a 429 shows as
`downloader_busy`, and the estimated times hold against a downloader of steady latency and rate.

The rig of `tests.actors.test_processor` runs everything under trio's autojump clock. For the
estimates the processor's wall clock runs with trio's virtual clock (`RunningWall`), so the
recorded times, the medians and the estimates are in the time the fake's latency and throttled
bodies take. An estimate is held to within a quarter of the wait it announced: made at `at`
for an event that happened at `actual`, it is off by at most `(actual - at) / 4`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import trio

from actors.messages import Hook, WakeProcessor
from daemon.config import DownloadManagerConfig
from fake_downloader import Knobs
from storage.queue import QueueAdminStore
from tests.actors.test_processor import SPEC, FakeWall, Rig, rig

# Three tracks of 100 kB at 10 kB/s and 0.2 s per answer: about 32 s an album.
STEADY = dataclasses.replace(SPEC, albums_per_artist=3, audio_bytes=100_000)
PAUSED_GAUGE = "pezzottify_download_paused"


class RunningWall(FakeWall):
    """The processor's wall clock, running with trio's (virtual) clock."""

    def __call__(self) -> int:
        return self.now + int(trio.current_time())


def steady() -> Knobs:
    return Knobs(latency_ms=200, audio_bytes_per_sec=10_000)


def shaped(r: Rig, item_id: str, at: int) -> dict[str, Any]:
    found = r.requests.item_for_user(item_id, "alice", at)
    assert found is not None
    return found


def within_a_quarter(estimate: int | None, actual: int, at: int) -> bool:
    return estimate is not None and abs(estimate - actual) <= (actual - at) / 4


async def test_a_pause_lets_the_file_in_flight_finish_and_starts_nothing_until_resumed(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(audio_bytes_per_sec=20_000)  # 2 s per track
    dm = DownloadManagerConfig(process_interval_secs=1)
    async with rig(tmp_path, knobs=knobs, dm=dm) as r:
        admin = QueueAdminStore(r.queue.db, dm)
        album = await r.request_album()
        await knobs.wait_until(lambda: knobs.active_audio > 0)
        await r.queue.db.run(admin.pause, "ops", "maintenance", r.wall())
        await trio.sleep(60)  # long after the track in flight would have ended
        kids = r.children(album)
        tracks = [k["status"] for k in kids if k["content_type"] == "TRACK_AUDIO"]
        assert sorted(tracks) == ["COMPLETED"] + ["PENDING"] * (SPEC.tracks_per_album - 1)
        assert knobs.count("audio") == 1
        assert "IN_PROGRESS" not in {k["status"] for k in kids}
        assert shaped(r, album, r.wall())["wait"] == {"reason": "paused", "until": None}
        assert r.metrics.registry.get_sample_value(PAUSED_GAUGE) == 1
        await r.queue.db.run(admin.resume, "ops", r.wall())
        r.wake.send_nowait(WakeProcessor())
        await r.wait_hook(Hook.OnDownloadComplete, within=30)
        assert r.item(album)["status"] == "COMPLETED"
        assert r.metrics.registry.get_sample_value(PAUSED_GAUGE) == 0


async def test_a_429_shows_as_a_busy_downloader_until_it_is_asked_again(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(retry_after_s=30)
    knobs.fail("audio", 429, times=1)
    async with rig(tmp_path, knobs=knobs) as r:
        album = await r.request_album()
        await r.settle()  # everything else done; the refused track waits its Retry-After
        busy = {"reason": "downloader_busy", "until": r.wall.now + 30}
        detail = shaped(r, album, r.wall())
        (refused,) = [c for c in detail["children"] if c["status"] == "RETRY_WAITING"]
        assert refused["wait"] == busy
        assert detail["wait"] == busy  # nothing moves for the album before then
        await r.later(30)
        detail = shaped(r, album, r.wall())
        assert (detail["status"], detail["wait"]) == ("COMPLETED", None)


async def test_estimates_hold_on_a_steady_downloader(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    wall = RunningWall()
    async with rig(tmp_path, knobs=steady(), spec=STEADY, wall=wall) as r:
        first = await r.request_album(0)
        assert shaped(r, first, wall())["estimated_start_at"] is None  # no history yet
        await r.wait_hook(Hook.OnDownloadComplete, within=120)
        await r.request_album(1)
        await r.wait_hook(Hook.OnDownloadComplete, within=120)
        waiting = [await r.request_album(n) for n in (2, 3, 4, 5)]
        await r.knobs.wait_until(lambda: r.knobs.active_audio > 0)  # the first track streams
        at = wall()
        told = {item: shaped(r, item, at) for item in waiting}
        assert [told[item]["wait"] for item in waiting[1:]] == [
            {"reason": "queued", "until": None}
        ] * 3
        for _ in waiting:
            await r.wait_hook(Hook.OnDownloadComplete, within=600)
        head = r.item(waiting[0])
        estimate = told[waiting[0]]["estimated_completion_at"]
        assert within_a_quarter(estimate, head["completed_at"], at), (estimate, head, at)
        for item in waiting[1:]:
            estimate, actual = told[item]["estimated_start_at"], r.item(item)["started_at"]
            assert within_a_quarter(estimate, actual, at), (estimate, actual, at)


async def test_start_estimates_wait_for_the_capacity_to_reset(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    wall = RunningWall()
    dm = DownloadManagerConfig(max_albums_per_hour=3, process_interval_secs=10)
    async with rig(tmp_path, knobs=steady(), spec=STEADY, wall=wall, dm=dm) as r:
        for n in (0, 1):  # the history, and two of this hour's three albums
            await r.request_album(n)
            await r.wait_hook(Hook.OnDownloadComplete, within=120)
        waiting = [await r.request_album(n) for n in (2, 3, 4)]
        await r.knobs.wait_until(lambda: r.knobs.active_audio > 0)
        at = wall()
        told = {item: shaped(r, item, at) for item in waiting}
        next_hour = at - at % 3600 + 3600
        assert told[waiting[1]]["wait"] == {"reason": "capacity", "until": next_hour}
        assert told[waiting[1]]["estimated_start_at"] == next_hour
        for _ in waiting:
            await r.wait_hook(Hook.OnDownloadComplete, within=7200)
        for item in waiting[1:]:
            estimate, actual = told[item]["estimated_start_at"], r.item(item)["started_at"]
            assert actual >= next_hour
            assert within_a_quarter(estimate, actual, at), (estimate, actual, at)
