"""Live events on the whole daemon (SPEC §14): what each client sees, replay, drops, sessions.

The daemon runs in-process with every actor and its real HTTP listener on loopback, against the
fake downloader; clients read `/v1/events` over real connections.
"""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from fake_downloader import CatalogSpec, Knobs, build_catalog
from tests.support.live import daemon, fake, sign_in, until
from tests.support.sse import Reader, stream

pytestmark = pytest.mark.process  # starts servers: not in `make check`

SPEC = CatalogSpec(
    seed=11, artists=2, albums_per_artist=2, tracks_per_album=6, audio_bytes=64 * 1024,
    image_bytes=2048,
)  # fmt: skip
FAKE = build_catalog(SPEC)


async def request(client: httpx.AsyncClient, index: int) -> str:
    body = {"album_id": FAKE.album_ids[index], "album_name": "A", "artist_name": "B"}
    response = await client.post("/v1/download/request/album", json=body)
    assert response.status_code == 201, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def updated_albums(events: list[tuple[int | None, str, Any]]) -> set[str]:
    return {a for _, name, data in events if name == "catalog.updated" for a in data["album_ids"]}


def has_events(reader: Reader, count: int) -> bool:
    return len(after_hello(reader)) >= count


def after_hello(reader: Reader) -> list[tuple[int | None, str, Any]]:
    return [(e.id, e.name, e.data) for e in reader.events if e.name != "hello"]


async def test_a_requester_follows_their_album_live_and_sees_nobody_else(tmp_path: Path) -> None:
    knobs = Knobs(latency_ms=20)
    async with fake(knobs, SPEC) as (url, _), daemon(tmp_path, url, SPEC) as live:
        alice, bob = await sign_in(live, "alice"), await sign_in(live, "bob")
        async with stream(alice) as mine, stream(bob) as theirs:
            hello = await mine.wait_for("hello")
            assert hello.id is None and hello.data["server_started_at"] > 0
            own = await request(alice, 0)
            await request(bob, 1)
            await mine.wait_for("request.completed", id=own)
            await theirs.wait_for("request.completed")
            names = mine.names()
            assert names[:2] == ["hello", "request.created"]
            assert "request.progress" in names
            progress = [e.data for e in mine.events if e.name == "request.progress"]
            assert set(progress[-1]) == {
                "id", "status", "progress", "bytes_downloaded", "wait", "estimated_completion_at"
            }  # fmt: skip
            assert {e.data["id"] for e in mine.events if e.name.startswith("request.")} == {own}
            assert all(not e.name.startswith(("queue.", "job.", "capacity")) for e in mine.events)
            # A regular user has AccessCatalog: told of the albums ingested, their own or not.
            updated = {
                a for e in theirs.events if e.name == "catalog.updated" for a in e.data["album_ids"]
            }
            assert FAKE.album_ids[1] in updated
            assert own not in {e.data.get("id") for e in theirs.events}
            ids = [e.id for e in mine.events if e.id is not None]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
        await alice.aclose()
        await bob.aclose()


async def test_reconnecting_with_last_event_id_misses_nothing(tmp_path: Path) -> None:
    knobs = Knobs(latency_ms=40)
    async with (
        fake(knobs, SPEC) as (url, _),
        daemon(tmp_path, url, SPEC) as live,
        stream(live.http) as steady,
    ):
        last = (await steady.wait_for("hello")).data["last_event_id"]
        album = await live.request(0)
        seen: list[tuple[int | None, str, Any]] = []
        for cut_after in (3, 6):  # connect late, then disconnect twice as the album downloads
            async with stream(live.http, last_event_id=last) as choppy:
                await choppy.wait_until(partial(has_events, count=cut_after))
                seen += after_hello(choppy)
                last = choppy.last_id()
        # The last reconnection uses the header, as a browser's EventSource does.
        async with stream(live.http, headers={"Last-Event-ID": str(last)}) as final:
            await steady.wait_for("request.completed")
            await final.wait_for("request.completed")
            await trio.sleep(0.3)  # anything still in flight reaches both
            seen += after_hello(final)
        assert seen == after_hello(steady)
        assert any(n == "catalog.updated" for _, n, _ in seen)
        assert album in updated_albums(seen)


async def test_an_id_older_than_what_is_kept_gets_resync(tmp_path: Path) -> None:
    async with fake(Knobs(), SPEC) as (url, _), daemon(tmp_path, url, SPEC) as live:
        await live.request(0)
        await live.wait_idle()
        events = live.root.events
        kept = await events.db.run(events.window)
        assert kept.newest > 0
        await events.db.run(events.prune_chunk, 2**40)  # everything is older than that
        async with stream(live.http, last_event_id=1) as old:
            resync = await old.wait_for("resync")
            newest = (await old.wait_for("hello")).data["last_event_id"]
            assert resync.id == newest >= kept.newest  # resume from the newest id
        async with stream(live.http, last_event_id=kept.newest + 100) as future:
            await future.wait_for("resync")
        bad = await live.http.get("/v1/events", headers={"Last-Event-ID": "x1"})
        assert bad.status_code == 400 and bad.json()["code"] == "INVALID_LAST_EVENT_ID"
        for query in ("-1", "abc", str(2**63), "1.5"):
            bad = await live.http.get("/v1/events", params={"last_event_id": query})
            assert bad.status_code == 400, (query, bad.text)
            assert set(bad.json()) >= {"error", "code"}


async def test_a_client_that_stops_reading_is_dropped_and_the_queue_goes_on(
    tmp_path: Path,
) -> None:
    spec = CatalogSpec(seed=3, artists=1, albums_per_artist=4, tracks_per_album=40,
                       audio_bytes=4096, image_bytes=512)  # fmt: skip
    async with fake(Knobs(), spec) as (url, _), daemon(tmp_path, url, spec) as live:
        token = live.http.headers["Authorization"].split()[1]
        host, port = live.http.base_url.host, live.http.base_url.port
        with socket.socket() as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.connect((host, port))
            stuck.sendall(
                f"GET /v1/events HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            await until(lambda: len(live.root.hub.streams) == 1, within=5)
            for index in range(4):  # an admin sees every item's change: hundreds of events
                await live.request(index)
            await until(lambda: live.root.hub.dropped == 1, within=30)
            await live.wait_idle(within=60)
        await live.settled(build_catalog(spec).album_ids[:4])


async def test_a_revoked_session_closes_its_streams_within_seconds(tmp_path: Path) -> None:
    async with fake(Knobs(), SPEC) as (url, _), daemon(tmp_path, url, SPEC) as live:
        carol = await sign_in(live, "carol")
        async with stream(carol) as watching:
            await watching.wait_for("hello")
            response = await carol.post("/v1/auth/logout")
            assert response.status_code in (200, 204), response.text
            with trio.fail_after(8):
                await watching.ended.wait()
            assert len(live.root.hub.streams) == 0
        await carol.aclose()
