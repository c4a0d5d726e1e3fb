"""The busy-downloader benchmark: the fake downloader's response log it reads, its arithmetic
on that log, and the whole benchmark at toy scale."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import busy_downloader, services
from bench.busy_downloader import Drain, figures, union_within
from fake_downloader import CatalogSpec, build_catalog

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`


def _lines(log: Path, count: int) -> list[str]:
    """The log's lines once there are `count` (each is written as its response ends, just
    after the client has it)."""
    deadline = time.monotonic() + 10
    while len(lines := log.read_text().splitlines()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return lines


def test_the_fake_downloader_logs_when_each_body_went_out(tmp_path: Path) -> None:
    log = tmp_path / "responses.jsonl"
    spec = CatalogSpec(seed=3, artists=1, albums_per_artist=1, tracks_per_album=2,
                       audio_bytes=200_000)  # fmt: skip
    catalog = build_catalog(spec)
    flags = ["--seed=3", "--artists=1", "--albums-per-artist=1", "--tracks-per-album=2",
             "--audio-bytes=200000", "--latency-ms=20", "--audio-bytes-per-sec=500000",
             f"--log-responses={log}"]  # fmt: skip
    with services.fake_downloader(*flags) as url, httpx.Client(base_url=url) as client:
        audio = client.get(f"/track/{catalog.track_ids[0]}/audio")
        missing = client.get("/album/0000000000000000000000")
        lines = _lines(log, 2)
    assert (audio.status_code, len(audio.content), missing.status_code) == (200, 200_000, 404)
    first, second = (json.loads(line) for line in lines)
    assert (first["endpoint"], first["id"], first["status"], first["bytes"]) == (
        "audio", catalog.track_ids[0], 200, 200_000,
    )  # fmt: skip
    assert first["start"] - first["received"] >= 0.02  # the latency comes before the answer
    # 200 kB at 500 kB/s in chunks of 50 kB: the last one leaves 0.3 s after the first.
    assert 0.3 <= first["end"] - first["start"] < 0.6
    assert (second["endpoint"], second["status"]) == ("album", 404)
    assert second["received"] >= first["end"]


def test_sending_time_is_the_union_of_the_bodies_within_the_window() -> None:
    spans = [(2.0, 4.0), (1.0, 3.0), (6.0, 7.0), (9.0, 12.0)]
    assert union_within(spans, 0.0, 20.0) == 3.0 + 1.0 + 3.0
    assert union_within(spans, 1.5, 10.0) == 2.5 + 1.0 + 1.0
    assert union_within([], 0.0, 1.0) == 0.0


def _record(endpoint: str, ident: str, received: float, start: float, end: float,
            status: int = 200) -> dict[str, Any]:  # fmt: skip
    return {"endpoint": endpoint, "id": ident, "status": status, "received": received,
            "start": start, "end": end, "bytes": 1}  # fmt: skip


def test_the_figures_of_a_round_come_from_the_log_and_the_queue() -> None:
    catalog = build_catalog(busy_downloader.spec(busy_downloader.SMOKE, 1))
    album, (t0, t1, t2) = catalog.album_ids[0], (catalog.track_ids[t] for t in range(3))
    cover, portrait = catalog.cover_ids[0], catalog.portrait_ids[0]
    records = [
        _record("album", album, 0.0, 0.1, 0.1),
        _record("audio", t0, 0.2, 0.3, 1.3),
        _record("audio", t1, 1.4, 1.5, 2.5),
        _record("audio", t1, 1.45, 1.5, 1.5, status=429),  # refused: not sending
        _record("audio", t2, 2.7, 2.8, 3.8),
        _record("image", cover, 3.9, 4.0, 4.5),
        _record("image", portrait, 4.5, 4.6, 5.0),
    ]
    drain = Drain(0.0, [album], completed={album: 6.0}, audio_done=4.0)
    round_ = figures(drain, records, catalog)
    assert round_.sending == pytest.approx(3.0 / 4.0)  # 3 s of audio in a 4 s window
    assert round_.albums == [pytest.approx(6.0 / (3.0 + 0.5 + 0.4))]
    assert round_.refused == 1
    idle = round_.idle
    assert (idle.latency, idle.turnaround, idle.ends) == (
        pytest.approx(0.2), pytest.approx(0.1 + 0.2), pytest.approx(0.3 + 0.2),
    )  # fmt: skip
    assert idle.between_albums == 0.0


def test_busy_downloader_at_toy_scale_reports_both_rows() -> None:
    rows = busy_downloader.run(busy_downloader.SMOKE)
    assert [r.measure for r in rows] == [
        "audio sending ÷ wall time while work is ready",
        "album completion ÷ its own transfer times",
    ]
    sending, albums = rows
    assert sending.ratio.n == busy_downloader.SMOKE.rounds
    assert 0 < sending.ratio.low <= sending.ratio.high <= 1.0
    assert albums.ratio.n == busy_downloader.SMOKE.albums * busy_downloader.SMOKE.rounds
    assert albums.ratio.low >= 1.0  # an album never takes less than its own transfers
    assert "0 audio 429s" in sending.detail
