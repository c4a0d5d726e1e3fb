"""The events hub hands each open stream what its reader may see, in order, and only that;
the periodic session check closes the streams of ended sessions, and only those."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import trio
import trio.testing

from actors.events import (
    FANOUT_PACE_S,
    STREAM_BUFFER,
    EventHub,
    EventPublisher,
    Stream,
)
from storage.events import Audience, Event, EventStore, Viewer
from storage.jobs import JobStore
from storage.user_model import User
from storage.users import Role, UserStore


def open_stream(hub: EventHub, handle: str, *, admin: bool = False, catalog: bool = True) -> Stream:
    stream = Stream(
        Viewer(handle, admin=admin, catalog=catalog), f"token-{handle}", trio.CancelScope()
    )
    hub.join(stream)
    return stream


def event(event_id: int, audience: Audience, owner: str | None = None) -> Event:
    return Event(event_id, f"e{event_id}", audience, owner, "{}")


def received(stream: Stream) -> list[int]:
    ids = []
    while True:
        try:
            ids.append(stream.receive.receive_nowait().id)
        except (trio.WouldBlock, trio.EndOfChannel):
            return ids


async def test_each_stream_receives_its_own_requests_and_what_its_permissions_show_in_order() -> (
    None
):
    hub = EventHub(0)
    alice, bob = open_stream(hub, "alice"), open_stream(hub, "bob")
    root = open_stream(hub, "root", admin=True)
    guest = open_stream(hub, "guest", catalog=False)
    await hub.deliver([
        event(1, Audience.OWNER, "alice"), event(2, Audience.ADMIN),
        event(3, Audience.OWNER, "bob"), event(4, Audience.CATALOG),
        event(5, Audience.OWNER, "alice"), event(6, Audience.OWNER, "root"),
    ])  # fmt: skip
    assert received(alice) == [1, 4, 5]
    assert received(bob) == [3, 4]
    assert received(root) == [2, 4, 6]
    assert received(guest) == []


async def test_a_changed_permission_changes_what_an_open_stream_receives() -> None:
    hub = EventHub(0)
    carol = open_stream(hub, "carol")
    await hub.deliver([event(1, Audience.ADMIN)])
    hub.set_viewer(carol, Viewer("carol", admin=True, catalog=True))
    await hub.deliver([event(2, Audience.ADMIN)])
    hub.set_viewer(carol, Viewer("carol", admin=False, catalog=False))
    await hub.deliver(
        [event(3, Audience.ADMIN), event(4, Audience.CATALOG), event(5, Audience.OWNER, "carol")]
    )
    assert received(carol) == [2, 5]


async def test_a_stream_that_fell_behind_is_dropped_and_the_others_go_on() -> None:
    hub = EventHub(0)
    slow, other = open_stream(hub, "slow"), open_stream(hub, "other")
    await hub.deliver([event(n, Audience.OWNER, "slow") for n in range(1, STREAM_BUFFER + 1)])
    assert hub.dropped == 0
    await hub.deliver([event(STREAM_BUFFER + 1, Audience.CATALOG)])
    assert hub.dropped == 1
    assert slow not in hub.streams and other in hub.streams
    assert slow.scope.cancel_called  # its response is ended
    await hub.deliver([event(STREAM_BUFFER + 2, Audience.OWNER, "other")])
    assert received(other) == [STREAM_BUFFER + 1, STREAM_BUFFER + 2]
    assert len(received(slow)) == STREAM_BUFFER  # what it had buffered, then the end


async def test_a_closed_stream_receives_nothing_more() -> None:
    hub = EventHub(0)
    dave = open_stream(hub, "dave", admin=True)
    hub.close_stream(dave)
    await hub.deliver([event(1, Audience.ADMIN), event(2, Audience.OWNER, "dave")])
    assert received(dave) == []


async def test_a_stream_opened_while_sessions_are_checked_stays_open(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    users = UserStore.open(tmp_path / "user.db")
    jobs = JobStore.open(tmp_path / "server.db")
    for handle in ("erin", "frank"):
        user = users.create_user(handle, (Role.Regular,))
        users.create_session(user.id, f"token-{handle}", {})
    hub = EventHub(0)
    check = users.session_users
    checks: list[list[str]] = []
    joined = threading.Event()

    def slow_check(tokens: list[str]) -> dict[str, User]:
        checks.append(tokens)
        if len(checks) == 1:
            joined.wait(10)  # frank's stream opens while erin's session is being checked
        return check(tokens)

    async def checks_made(count: int) -> None:
        while len(checks) < count:  # noqa: ASYNC110 - the checks run in a worker thread
            await trio.sleep(0.1)

    users.session_users = slow_check  # type: ignore[method-assign]
    shutdown = trio.Event()
    publisher = EventPublisher(hub, EventStore(jobs.db), None, users, shutdown=shutdown)
    erin = Stream(Viewer("erin", False, True), "token-erin", trio.CancelScope())
    frank = Stream(Viewer("frank", False, True), "token-frank", trio.CancelScope())
    hub.join(erin)
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        await checks_made(1)
        hub.join(frank)
        joined.set()
        await checks_made(2)  # the first check's outcome is applied before the second starts
        assert hub.streams == {erin, frank} and checks[0] == ["token-erin"]
        assert checks[1] == ["token-erin", "token-frank"]
        users.delete_session("token-frank")
        await checks_made(4)
        assert hub.streams == {erin}  # the next check saw frank's session gone
        assert frank.scope.cancel_called and not erin.scope.cancel_called
        shutdown.set()
    users.db.close()
    jobs.db.close()


def handed_out(streams: list[Stream]) -> int:
    return sum(1 for s in streams if s.receive.statistics().current_buffer_used)


async def test_a_batch_for_many_streams_goes_out_a_stream_per_turn_on_an_idle_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A thousand phones each get `catalog.updated`: one stream per turn of the event loop,
    and no waiting between them while no request is being served."""
    hub = EventHub(0)
    streams = [open_stream(hub, f"user{n}") for n in range(1000)]
    handed: list[int] = []

    async def watch() -> None:
        for _ in range(3000):  # then the clock may move, should the hub be waiting for it
            handed.append(handed_out(streams))
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.lowlevel.checkpoint()
        started = trio.current_time()
        await hub.deliver([event(1, Audience.CATALOG), event(2, Audience.CATALOG)])
        took = trio.current_time() - started
    assert [received(stream) for stream in streams] == [[1, 2]] * 1000
    steps = [b - a for a, b in itertools.pairwise([0, *(n for n in handed if n < 1000), 1000])]
    # The watcher runs before or after the hub within a turn: it sees one stream or two.
    assert max(steps) <= 2
    assert took == 0


async def test_while_a_request_is_served_a_fan_out_goes_a_stream_per_pace_then_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While a request is being served, a stream per `FANOUT_PACE_S`; once it has been
    answered, the streams left go out without waiting."""
    hub = EventHub(0)
    streams = [open_stream(hub, f"user{n}") for n in range(1000)]
    serving_s = 200 * FANOUT_PACE_S
    hub.serving = 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.deliver, [event(1, Audience.CATALOG)])
        await trio.sleep(serving_s)
        during = handed_out(streams)
        hub.serving = 0
        answered_at = trio.current_time()
    assert 190 <= during <= 201
    assert trio.current_time() - answered_at < 2 * FANOUT_PACE_S
    assert [received(stream) for stream in streams] == [[1]] * 1000


async def test_a_stream_closed_while_a_batch_is_handed_out_receives_nothing() -> None:
    hub = EventHub(0)
    streams = [open_stream(hub, f"user{n}") for n in range(3)]

    async def close_all() -> None:  # runs at the first turn it can
        for stream in streams:
            hub.close_stream(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_all)
        await hub.deliver([event(1, Audience.CATALOG)])
    got = [len(received(stream)) for stream in streams]
    # The streams handed out before the close (the closer runs at the first or second turn).
    assert sum(got) in (1, 2)


async def test_a_stream_with_nothing_to_say_gets_a_comment_every_15_s_and_a_busy_one_none(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = EventHub(0)
    got: dict[Stream, list[tuple[float, Event | None]]] = {}

    async def read(stream: Stream) -> None:
        async for item in stream.receive:
            got[stream].append((trio.current_time(), item))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.keep_alive)
        await trio.sleep(0.5)  # the streams open between two of the hub's ticks
        quiet, busy = open_stream(hub, "quiet"), open_stream(hub, "busy")
        got.update({quiet: [], busy: []})
        for stream in got:
            nursery.start_soon(read, stream)
        opened = trio.current_time()
        for n in range(1, 46):  # the busy stream gets an event every second for 45 s
            await trio.sleep(1)
            await hub.deliver([event(n, Audience.OWNER, "busy")])
        nursery.cancel_scope.cancel()
    assert [item for _, item in got[quiet]] == [None, None, None]
    times = [opened] + [at for at, _ in got[quiet]]
    assert all(14 <= b - a <= 15 for a, b in itertools.pairwise(times))
    assert [item.id for _, item in got[busy] if item is not None] == list(range(1, 46))
    assert len(got[busy]) == 45  # no comment among its events
