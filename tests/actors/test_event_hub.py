"""The events hub hands each open stream what its reader may see, in order, and only that."""

from __future__ import annotations

import trio

from actors.events import STREAM_BUFFER, EventHub, Stream
from storage.events import Audience, Event, Viewer


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
    hub.deliver([
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
    hub.deliver([event(1, Audience.ADMIN)])
    hub.set_viewer(carol, Viewer("carol", admin=True, catalog=True))
    hub.deliver([event(2, Audience.ADMIN)])
    hub.set_viewer(carol, Viewer("carol", admin=False, catalog=False))
    hub.deliver(
        [event(3, Audience.ADMIN), event(4, Audience.CATALOG), event(5, Audience.OWNER, "carol")]
    )
    assert received(carol) == [2, 5]


async def test_a_stream_that_fell_behind_is_dropped_and_the_others_go_on() -> None:
    hub = EventHub(0)
    slow, other = open_stream(hub, "slow"), open_stream(hub, "other")
    hub.deliver([event(n, Audience.OWNER, "slow") for n in range(1, STREAM_BUFFER + 1)])
    assert hub.dropped == 0
    hub.deliver([event(STREAM_BUFFER + 1, Audience.CATALOG)])
    assert hub.dropped == 1
    assert slow not in hub.streams and other in hub.streams
    assert slow.scope.cancel_called  # its response is ended
    hub.deliver([event(STREAM_BUFFER + 2, Audience.OWNER, "other")])
    assert received(other) == [STREAM_BUFFER + 1, STREAM_BUFFER + 2]
    assert len(received(slow)) == STREAM_BUFFER  # what it had buffered, then the end


async def test_a_closed_stream_receives_nothing_more() -> None:
    hub = EventHub(0)
    dave = open_stream(hub, "dave", admin=True)
    hub.close_stream(dave)
    hub.deliver([event(1, Audience.ADMIN), event(2, Audience.OWNER, "dave")])
    assert received(dave) == []
