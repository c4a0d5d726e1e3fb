"""The realistic-day benchmark: its paced load process and the whole benchmark at toy scale."""

from __future__ import annotations

from collections import Counter
from functools import partial

import pytest
import trio

from bench import day_load, realistic_day
from bench.day_load import Pacing, Plan

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`


async def _answer(stream: trio.SocketStream, heads: list[str]) -> None:
    """A loopback server that notes each request's head and answers 200 with no body."""
    buffer = b""
    async with stream:
        while data := await stream.receive_some(65536):
            buffer += data
            while b"\r\n\r\n" in buffer:
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                heads.append(head.decode("latin-1"))
                await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


async def test_the_day_load_paces_pollers_and_plays_tracks_chunk_by_chunk() -> None:
    heads: list[str] = []
    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_tcp, partial(_answer, heads=heads), 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        plan = Plan(users=["u0", "u1"], admins=["a0"], tracks=[("T1", 2500), ("T2", 1000)])
        # Chunks of 1,000 bytes played at 5,000 bytes/s: one every 0.2 s (0.1 s for 500).
        pacing = Pacing(period=0.8, streamers=1, chunk=1000, stream_rate=5_000)
        samples = await day_load.run_day("127.0.0.1", port, plan, pacing, duration=1.0)
        nursery.cancel_scope.cancel()
    counts = Counter(route for route, *_ in samples)
    # u0 polls at 0 and 0.8 s, u1 at 0.4, the admin at 0.4; the player asks at 0, 0.2, 0.4,
    # 0.5 (T2, after the 500 bytes left of T1), 0.7 (T1 again) and 0.9.
    assert counts == {"my-requests": 3, "admin/stats": 1, "admin/requests": 1, "stream": 6}
    assert all(status == 200 for *_, status in samples)
    ranges = [h.split("\r\n")[0] + " " + h.split("Range: ")[1] for h in heads if "Range" in h]
    assert ranges == [
        "GET /v1/content/stream/T1 HTTP/1.1 bytes=0-999",
        "GET /v1/content/stream/T1 HTTP/1.1 bytes=1000-1999",
        "GET /v1/content/stream/T1 HTTP/1.1 bytes=2000-2499",
        "GET /v1/content/stream/T2 HTTP/1.1 bytes=0-999",
        "GET /v1/content/stream/T1 HTTP/1.1 bytes=0-999",
        "GET /v1/content/stream/T1 HTTP/1.1 bytes=1000-1999",
    ]
    assert sum("Authorization: Bearer a0" in h for h in heads) == 2


@pytest.mark.slow
def test_realistic_day_at_toy_scale_reports_every_route() -> None:
    rows = realistic_day.run(realistic_day.SMOKE)
    assert [r.measure.split(" p99")[0] for r in rows] == [
        "GET /v1/download/my-requests",
        "GET /v1/content/stream/{id} (256 KiB Range)",
        "GET /v1/download/admin/stats",
        "GET /v1/download/admin/requests",
        "slowest request of a busy window ÷ 1 s",
        "requests failed or not 2xx, busy and idle windows",
    ]
    for row in rows[:5]:
        assert row.ratio.n == realistic_day.SMOKE.rounds
        assert 0 < row.ratio.low <= row.ratio.median <= row.ratio.high
        assert row.verdict in ("met", "**missed**")
    # Every route answered (the streams are real files, a Range of them 206), none failed.
    assert rows[-1].ratio.median == 0 and rows[-1].verdict == "met"
