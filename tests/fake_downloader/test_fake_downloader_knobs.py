"""Fake downloader knobs: injected failures, busy 429, latency, throttling and hostile faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from fake_downloader import CatalogSpec, FakeDownloader, Knobs, audio_bytes, open_fake_downloader

pytestmark = pytest.mark.trio

SPEC = CatalogSpec(seed=11, artists=2, albums_per_artist=2, tracks_per_album=3, audio_bytes=300_000)


@asynccontextmanager
async def running(
    knobs: Knobs | None = None,
) -> AsyncIterator[tuple[FakeDownloader, httpx.AsyncClient]]:
    async with (
        open_fake_downloader(SPEC, knobs) as fake,
        httpx.AsyncClient(base_url=fake.base_url, timeout=10) as client,
    ):
        yield fake, client


async def wait_idle(knobs: Knobs) -> None:
    with trio.fail_after(5):
        while knobs.active_audio:  # noqa: ASYNC110 - polls a plain counter
            await trio.sleep(0.01)


async def read_into(response: httpx.Response, buffer: bytearray) -> None:
    async for chunk in response.aiter_bytes():
        buffer += chunk


async def statuses(client: httpx.AsyncClient, path: str, n: int) -> list[int]:
    return [(await client.get(path)).status_code for _ in range(n)]


async def test_fail_rate_is_seeded_and_roughly_right() -> None:
    sequences = []
    for _ in range(2):
        async with running(Knobs(fail_seed=5)) as (fake, client):
            fake.knobs.fail("track", 503, 0.3)
            track = f"/track/{fake.catalog.track_ids[0]}"
            sequences.append(await statuses(client, track, 150))
            album = await client.get(f"/album/{fake.catalog.album_ids[0]}")
            assert album.status_code == 200
    assert sequences[0] == sequences[1]
    assert set(sequences[0]) == {200, 503}
    assert 25 <= sequences[0].count(503) <= 70


async def test_fail_codes_retry_after_and_times() -> None:
    async with running() as (fake, client):
        knobs, path = fake.knobs, f"/album/{fake.catalog.album_ids[1]}"
        knobs.fail("*", 429, times=1)
        limited = await client.get(path)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "1"
        assert limited.json()["code"] == "TOO_MANY_REQUESTS"
        assert (await client.get(path)).status_code == 200
        knobs.fail("album", 504, times=2)
        timeouts = await client.get(path)
        assert timeouts.json()["code"] == "TIMEOUT"
        assert await statuses(client, path, 2) == [504, 200]
        knobs.fail("album", 503)
        assert (await client.get(path)).json()["code"] == "SERVICE_UNAVAILABLE"
        knobs.clear()
        assert (await client.get(path)).status_code == 200


async def test_overlapping_audio_gets_429_until_first_finishes() -> None:
    async with running() as (fake, client):
        knobs = fake.knobs
        first, second = (f"/track/{t}/audio" for t in fake.catalog.track_ids[:2])
        knobs.fault("stall", "audio", times=1, stall_seconds=30)
        async with client.stream("GET", first) as stalled:
            assert stalled.status_code == 200
            busy = await client.get(second)
            assert busy.status_code == 429
            assert busy.headers["retry-after"] == "1"
            assert busy.json()["code"] == "TOO_MANY_REQUESTS"
        await wait_idle(knobs)
        assert (await client.get(second)).status_code == 200
        knobs.allow_parallel_audio = True
        knobs.fault("stall", "audio", times=1, stall_seconds=30)
        async with client.stream("GET", first):
            assert (await client.get(second)).status_code == 200


async def test_latency_and_throttle() -> None:
    async with running(Knobs(latency_ms=150)) as (fake, client):
        started = trio.current_time()
        await client.get("/search", params={"q": "a"})
        assert trio.current_time() - started >= 0.15
        fake.knobs.latency_ms = 0
        fake.knobs.audio_bytes_per_sec = 1_000_000
        track_id = fake.catalog.track_ids[0]
        started = trio.current_time()
        response = await client.get(f"/track/{track_id}/audio")
        assert trio.current_time() - started >= 0.2
        assert response.content == audio_bytes(SPEC, track_id)


async def test_truncate_then_behave() -> None:
    async with running() as (fake, client):
        track_id = fake.catalog.track_ids[1]
        fake.knobs.fault("truncate", "audio", times=2)
        for _ in range(2):
            received = bytearray()
            async with client.stream("GET", f"/track/{track_id}/audio") as response:
                assert response.headers["content-length"] == str(SPEC.audio_bytes)
                with pytest.raises(httpx.RemoteProtocolError):
                    await read_into(response, received)
            assert bytes(received) == audio_bytes(SPEC, track_id)[: SPEC.audio_bytes // 2]
            await wait_idle(fake.knobs)
        whole = await client.get(f"/track/{track_id}/audio")
        assert whole.content == audio_bytes(SPEC, track_id)
        assert fake.knobs.faults == []


async def test_truncated_json() -> None:
    async with running() as (fake, client):
        fake.knobs.fault("truncate", "album", times=1)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/album/{fake.catalog.album_ids[0]}")


async def test_stall_sends_headers_then_waits() -> None:
    async with running() as (fake, client):
        path = f"/album/{fake.catalog.album_ids[0]}"
        fake.knobs.fault("stall", "album", times=1)
        timeout = httpx.Timeout(5, read=0.3)
        async with client.stream("GET", path, timeout=timeout) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                await response.aread()
        fake.knobs.fault("stall", "album", times=1, stall_seconds=0.2)
        started = trio.current_time()
        slow = await client.get(path)
        assert trio.current_time() - started >= 0.2
        assert slow.json()["id"] == fake.catalog.album_ids[0]


async def raw_get(base_url: str, path: str, max_bytes: int) -> tuple[bytes, int]:
    """GET over a bare socket: the response head and how many bytes came before hanging up."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        received = b""
        while len(received) < max_bytes:
            chunk = await stream.receive_some()
            assert chunk, "server closed the connection"
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head.lower(), len(body)


async def test_endless_audio_stops_when_client_leaves() -> None:
    async with running() as (fake, client):
        path = f"/track/{fake.catalog.track_ids[2]}/audio"
        fake.knobs.fault("endless", "audio", times=1)
        with trio.fail_after(5):
            head, received = await raw_get(fake.base_url, path, 3 * SPEC.audio_bytes)
        assert head.startswith(b"http/1.1 200")
        assert b"content-length" not in head
        assert b"transfer-encoding: chunked" in head
        assert received > 2 * SPEC.audio_bytes
        await wait_idle(fake.knobs)
        assert (await client.get(path)).status_code == 200


async def test_bad_json_skips_byte_endpoints() -> None:
    async with running() as (fake, client):
        fake.knobs.fault("bad_json", "*", times=1)
        audio = await client.get(f"/track/{fake.catalog.track_ids[0]}/audio")
        assert audio.content == audio_bytes(SPEC, fake.catalog.track_ids[0])
        broken = await client.get(f"/track/{fake.catalog.track_ids[0]}")
        assert broken.headers["content-type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            json.loads(broken.content)
        assert (await client.get(f"/track/{fake.catalog.track_ids[0]}")).json()["number"] == 1


async def test_content_type_fault_and_knob() -> None:
    async with running() as (fake, client):
        track_id = fake.catalog.track_ids[0]
        path = f"/track/{track_id}/audio"
        fake.knobs.fault("content_type", "audio", times=1, content_type="text/html")
        html = await client.get(path)
        assert html.headers["content-type"] == "text/html"
        assert html.content == audio_bytes(SPEC, track_id)
        assert (await client.get(path)).headers["content-type"] == "audio/flac"
        fake.knobs.audio_content_type = "audio/ogg"
        assert (await client.get(path)).headers["content-type"] == "audio/ogg"


async def test_faults_skip_error_responses() -> None:
    async with running() as (fake, client):
        fake.knobs.fault("truncate", "track", times=1)
        assert (await client.get("/track/" + "Z" * 22)).status_code == 404
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/track/{fake.catalog.track_ids[0]}")
