"""A pause outlives a restart (SPEC §8.10 rev 2 operator controls), on the whole daemon.

The daemon runs in-process with every actor and its HTTP listener against the fake downloader,
which trickles audio so that a track is caught downloading when the admin pauses: that track
finishes and nothing else starts. The daemon is stopped and started again on the same folder:
the queue is still paused, nothing is claimed however long it waits, and after the resume the
album completes, each file fetched once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from fake_downloader import CatalogSpec, Knobs
from tests.support.live import Live, daemon, fake, until

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

SPEC = CatalogSpec(
    seed=11, artists=1, albums_per_artist=1, tracks_per_album=3, audio_bytes=1024 * 1024,
    image_bytes=2048,
)  # fmt: skip
RATE = 1024 * 1024  # a track takes a second
ADMIN = "/v1/download/admin"
WATCHED = 1.5  # seconds without a claim: several of the processor's 0.2 s intervals


async def get(live: Live, path: str, **params: Any) -> Any:
    response = await live.http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def album_request(live: Live) -> dict[str, Any]:
    (mine,) = (await get(live, "/v1/download/my-requests"))["requests"]
    return await get(live, f"/v1/download/request/{mine['id']}")


async def started(live: Live) -> int:
    found = await get(live, f"{ADMIN}/audit", event_type="DOWNLOAD_STARTED", limit=1)
    total: int = found["total_count"]
    return total


def tracks(request: dict[str, Any]) -> list[str]:
    return sorted(c["status"] for c in request["children"] if c["content_type"] == "TRACK_AUDIO")


async def test_a_pause_mid_album_outlives_a_restart(tmp_path: Path) -> None:
    knobs = Knobs(audio_bytes_per_sec=RATE)
    async with fake(knobs, SPEC) as (url, _):
        async with daemon(tmp_path, url, SPEC) as live:
            await live.request(0)
            await until(lambda: knobs.active_audio == 1, within=20)
            response = await live.http.post(f"{ADMIN}/pause", json={"reason": "new disk"})
            assert response.status_code == 200, response.text
            await until(lambda: knobs.active_audio == 0, within=10)  # the file in flight ends
            asked = knobs.count()
            await trio.sleep(WATCHED)
            assert knobs.count() == asked  # nothing more was asked of the downloader
            request = await album_request(live)
            assert tracks(request) == ["COMPLETED", "PENDING", "PENDING"]
            assert request["wait"] == {"reason": "paused", "until": None}
            (done,) = [c for c in request["children"] if c["status"] == "COMPLETED"
                       and c["content_type"] == "TRACK_AUDIO"]  # fmt: skip
            assert (tmp_path / "audio" / f"{done['content_id']}.flac").stat().st_size == (
                SPEC.audio_bytes
            )

        async with daemon(tmp_path, url, SPEC) as live:
            paused = (await get(live, f"{ADMIN}/stats"))["paused"]
            assert (paused["paused"], paused["paused_by"], paused["reason"]) == (
                True, "admin", "new disk",
            )  # fmt: skip
            claims = await started(live)
            await trio.sleep(WATCHED)
            assert await started(live) == claims  # nothing claimed after the restart
            assert knobs.count() == asked
            request = await album_request(live)
            assert tracks(request) == ["COMPLETED", "PENDING", "PENDING"]
            assert request["wait"] == {"reason": "paused", "until": None}

            response = await live.http.post(f"{ADMIN}/resume")
            assert response.status_code == 200, response.text
            await live.wait_idle()
            assert (await album_request(live))["status"] == "COMPLETED"
            await live.settled([request["content_id"]])
            assert knobs.count("audio") == SPEC.tracks_per_album  # each track fetched once
