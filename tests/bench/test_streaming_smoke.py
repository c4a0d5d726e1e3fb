"""The streaming benchmark at toy scale (daemon side only), its buffer model, and nginx's side
where nginx is installed: `make test` never needs nginx."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import streaming
from bench.stream_load import Player

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`


def test_a_buffer_that_runs_empty_is_a_stall_and_one_kept_ahead_is_not() -> None:
    rate = 100.0
    steady, starved = Player(rate), Player(rate)
    for player in (steady, starved):
        player.deliver(200, now=0.0)  # 2 s of audio buffered
        player.start(0.0)
    steady.deliver(100, now=1.5)  # 0.5 s still buffered when it came
    starved.deliver(100, now=2.5)  # came 0.5 s after the buffer ran out
    steady.finish(2.9)
    starved.finish(3.0)  # resumed at 2.5 with 1 s: still playing at 3.0
    assert (steady.stalls, starved.stalls) == (0, 1)
    assert steady.lowest == pytest.approx(0.5)
    assert starved.lowest == 0.0
    late = Player(rate)
    late.deliver(200, now=0.0)
    late.start(0.0)
    late.finish(2.5)  # the run ends while it waits for bytes that never came
    assert late.stalls == 1


def test_streaming_at_toy_scale_reports_every_row_of_the_daemon() -> None:
    params = streaming.SMOKE
    rows = streaming.run(params)
    assert [r.measure for r in rows] == [
        "Range streams: daemon MiB/s",
        "1,411 kbit/s streams with no stall over 1 s",
        "time to first byte p99 (ms), 3 streams playing",
    ]
    throughput, streams, ttfb = rows
    assert throughput.ratio.median > 0 and "nginx not run" in throughput.detail
    # Three listeners are far below what the daemon serves: none of them stalls.
    assert streams.ratio.median == params.realtime_start
    assert f"{params.realtime_start} streams for 1 s: 0 stalls" in streams.detail
    assert ttfb.ratio.median > 0 and " 0 failed; 0 stalls" in ttfb.detail


@pytest.mark.skipif(streaming.nginx_binary() is None, reason="nginx is not installed")
def test_nginx_serves_the_daemons_files_by_the_same_paths(tmp_path: Path) -> None:
    binary = streaming.nginx_binary()
    assert binary is not None
    (tmp_path / "audio").mkdir()
    track = "T000000000000000000007"
    (tmp_path / "audio" / f"{track}.flac").write_bytes(bytes(range(256)) * 2048)
    with streaming.nginx(binary, tmp_path) as server:
        assert server.workers  # its CPU is what is counted
        streaming.check_bytes(server.url, track, {}, tmp_path)
