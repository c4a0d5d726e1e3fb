"""The benchmarks of live events' cost: the streams' reader, the latency arithmetic, and each
benchmark at toy scale so its code cannot rot between `make bench` runs."""

from __future__ import annotations

import pytest

from bench import event_latency, idle_streams, slow_client
from bench.event_streams import Messages

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


ANSWER = (
    b"HTTP/1.1 200 \r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    + chunk(b'event: hello\ndata: {"server_started_at": 1}\n\n')
    + chunk(b": keep-alive\n\n")
    + chunk(b'id: 7\nevent: queue.item\ndata: {"content_id":"T1","change":"X"}\n\n')
    + b"0\r\n\r\n"
)


@pytest.mark.parametrize("piece", [1, 7, len(ANSWER)])
def test_the_streams_reader_finds_every_message_however_the_bytes_arrive(piece: int) -> None:
    parser = Messages()
    messages = []
    for start in range(0, len(ANSWER), piece):
        messages += parser.feed(ANSWER[start : start + piece])
    assert parser.head == 200 and parser.ended
    assert messages == [
        b'event: hello\ndata: {"server_started_at": 1}',
        b": keep-alive",
        b'id: 7\nevent: queue.item\ndata: {"content_id":"T1","change":"X"}',
    ]


def test_latency_runs_from_the_files_last_chunk_to_each_stream_that_read_its_completion() -> None:
    log = [
        {"endpoint": "audio", "id": "T1", "status": 200, "end": 10.0},
        {"endpoint": "image", "id": "I1", "status": 200, "end": 11.0},
        {"endpoint": "album", "id": "A1", "status": 200, "end": 9.0},
        {"endpoint": "audio", "id": "T2", "status": 429, "end": None},
    ]
    report = {
        "seen": {
            "1": ["queue.item", "T1", "DOWNLOAD_STARTED"],
            "2": ["queue.item", "T1", "DOWNLOAD_COMPLETED"],
            "3": ["queue.item", "I1", "DOWNLOAD_COMPLETED"],
            "4": ["capacity", None, None],
        },
        "streams": [
            {"received": [[1, 9.5], [2, 10.02], [3, 11.05], [4, 11.1]]},
            {"received": [[2, 10.04]]},  # missed the image's completion
        ],
    }
    rounds, missed = event_latency.latencies(report, log, [(9.0, 10.5), (10.5, 12.0)])
    assert missed == 1
    assert [sorted(round(x, 3) for x in r.latencies) for r in rounds] == [[0.02, 0.04], [0.05]]


def test_slow_client_at_toy_scale_reports_the_drain_ratio_and_the_drop() -> None:
    (row,) = slow_client.run(slow_client.SMOKE)
    assert row.ratio.n == slow_client.SMOKE.rounds and row.ratio.median > 0
    assert "dropped during the drain in" in row.detail


def test_event_latency_at_toy_scale_every_stream_gets_every_completion() -> None:
    (row,) = event_latency.run(event_latency.SMOKE)
    assert 0 < row.ratio.median < 10_000
    assert "0 completion events missing" in row.detail


@pytest.mark.slow
def test_idle_streams_at_toy_scale_reports_memory_keep_alive_and_every_route() -> None:
    rows = idle_streams.run(idle_streams.SMOKE)
    assert [r.measure.split(" p99")[0].split(":")[0] for r in rows] == [
        "daemon RSS (MiB)",
        "idle event streams that failed to open or that the server closed",
        "realistic day, GET /v1/download/my-requests",
        "realistic day, GET /v1/content/stream/{id} (256 KiB Range)",
        "realistic day, GET /v1/download/admin/stats",
        "realistic day, GET /v1/download/admin/requests",
        "realistic day with the streams open",
    ]
    assert rows[1].ratio.median == 0  # every stream opened, none closed by the server
    assert rows[-1].ratio.median == 0  # no request failed
