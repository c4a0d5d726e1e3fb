"""Cancelling an album mid-download on the whole daemon, then requesting it again (SPEC §8.3 rev 2).

The daemon runs in-process with every actor and its HTTP listener, against the fake downloader
trickling audio slowly enough that a track is caught half written: the cancel must stop it
within well under a second and leave no temporary file, keep the track already published, and
take the album out of the user's queue at once; the album requested again then fetches only
the tracks it lacks, as the downloader's request counts show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from fake_downloader import CatalogSpec, Knobs, audio_bytes, build_catalog
from tests.support.live import Live, daemon, fake, until

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

SPEC = CatalogSpec(
    seed=7, artists=1, albums_per_artist=1, tracks_per_album=3, audio_bytes=3 * 1024 * 1024,
    image_bytes=2048,
)  # fmt: skip
FAKE = build_catalog(SPEC)
TRACKS = [FAKE.track_ids[t] for t in FAKE.album_tracks(0)]
RATE = 2 * 1024 * 1024  # a track takes 1.5 s; its temporary file appears after 1 MiB


def parts(db_dir: Path) -> list[str]:
    return [p.name for p in (db_dir / "audio").iterdir() if p.name.endswith(".part")]


async def my_request(live: Live) -> dict[str, Any]:
    """The newest of the caller's requests."""
    response = await live.http.get("/v1/download/my-requests")
    assert response.status_code == 200, response.text
    newest: dict[str, Any] = response.json()["requests"][0]
    return newest


async def detail(live: Live, request_id: str) -> dict[str, Any]:
    response = await live.http.get(f"/v1/download/request/{request_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def wait_for_status(live: Live, request_id: str, status: str, within: float) -> None:
    """Poll the request over HTTP, as a client would, until it has `status`."""
    with trio.fail_after(within):
        while True:
            if (await detail(live, request_id))["status"] == status:
                return
            await trio.sleep(0.05)


async def test_cancel_mid_download_then_request_again_fetches_only_what_is_missing(
    tmp_path: Path,
) -> None:
    knobs = Knobs(audio_bytes_per_sec=RATE)
    async with fake(knobs, SPEC) as (url, _), daemon(tmp_path, url, SPEC) as live:
        await live.request(0)
        first = (await my_request(live))["id"]
        await until(lambda: knobs.count("audio") == 2 and bool(parts(tmp_path)), within=20)

        started = trio.current_time()
        response = await live.http.delete(f"/v1/download/request/{first}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "CANCELLED"
        stats = (await live.http.get("/v1/download/my-requests")).json()["stats"]
        assert stats["in_queue"] == 0  # out of the queue at once
        await until(lambda: knobs.active_audio == 0 and not parts(tmp_path), within=1)
        assert trio.current_time() - started < 1  # abandoned, not finished

        cancelled = await detail(live, first)
        states = [(c["content_type"], c["status"]) for c in cancelled["children"]]
        assert states[0] == ("TRACK_AUDIO", "COMPLETED")
        assert {status for _, status in states[1:]} == {"CANCELLED"}
        assert cancelled["progress"]["cancelled"] == len(states) - 1
        kept = tmp_path / "audio" / f"{TRACKS[0]}.flac"
        assert kept.read_bytes() == audio_bytes(SPEC, TRACKS[0])
        assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == [kept.name]
        await trio.sleep(0.5)
        assert knobs.count("audio") == 2  # nothing more is fetched for it

        search = await live.http.get("/v1/download/search", params={"q": FAKE.album_names[0]})
        (hit,) = search.json()["results"]
        assert (hit["in_catalog"], hit["in_queue"]) == (False, False)  # there in part

        await live.request(0)  # the same album again: accepted
        again = (await my_request(live))["id"]
        assert again != first
        await wait_for_status(live, again, "COMPLETED", within=30)
        assert knobs.count("audio") == 2 + 2  # only the two tracks it lacked
        done = await detail(live, again)
        tracks = [c for c in done["children"] if c["content_type"] == "TRACK_AUDIO"]
        assert [(c["content_id"], c["bytes_downloaded"]) for c in tracks] == [
            (TRACKS[0], 0), (TRACKS[1], SPEC.audio_bytes), (TRACKS[2], SPEC.audio_bytes),
        ]  # fmt: skip
        for track in TRACKS:
            path = tmp_path / "audio" / f"{track}.flac"
            assert path.read_bytes() == audio_bytes(SPEC, track)
        assert parts(tmp_path) == []
        search = await live.http.get("/v1/download/search", params={"q": FAKE.album_names[0]})
        assert search.json()["results"][0]["in_catalog"] is True
        assert live.restarts() == 0
