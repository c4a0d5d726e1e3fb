"""Notifications across a kill and a shutdown of a real `pezzottify-server` (SPEC §16 rev 2).

The outbox row is written in the transaction that ends a request, so it outlives the process:

- killed right after that commit, before the notifier could send: delivered once after the
  restart;
- killed (SIGKILL) while the send is in flight (the target holds its answer): sent again after
  the restart, so the target has it twice — delivery is at least once, as documented;
- SIGTERM while a slow target answers within `shutdown_timeout_sec`: the daemon waits for it,
  records it and exits 0;
- SIGTERM while the target holds its answer longer than the grace: the daemon exits 0 at the
  end of the grace, the row still pending, and delivers it after the next start.

The target is `tests.support.receiver` on loopback, a user's `json://` URL allowed through
`user_hosts_allowed`; the requester is the rig's admin, who sets it as their own URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fake_downloader import CatalogSpec
from tests.reliability.faulty_daemon import NOTICE_COMMITTED
from tests.reliability.harness import FAULT_EXIT, FakeDownloaderProcess, Rig, rig, running_fake
from tests.reliability.invariants import rows
from tests.support.receiver import Receiver, receiver

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

SPEC = CatalogSpec(
    seed=29, artists=1, albums_per_artist=2, tracks_per_album=2, audio_bytes=16 * 1024,
    image_bytes=1024,
)  # fmt: skip
GRACE_S = 3  # shutdown_timeout_sec
NOTIFY = {
    "user_schemes": ["ntfys", "discord", "json"],
    "user_hosts_allowed": ["127.0.0.1"],
    "timeout_sec": 30,  # the target's hold, not Apprise's timeout, decides how long a send takes
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDownloaderProcess]:
    with running_fake(SPEC) as fake:
        yield fake


@pytest.fixture
def target() -> Iterator[Receiver]:
    with receiver() as target:
        yield target


@contextmanager
def started(
    tmp_path: Path, fake: FakeDownloaderProcess, target: Receiver, fault: str | None = None
) -> Iterator[Rig]:
    """A rig whose daemon runs (dying at `fault`, if given), its admin's URL the target."""
    with rig(tmp_path, fake, top={"shutdown_timeout_sec": GRACE_S}, notifications=NOTIFY) as r:
        r.start(fault)
        response = r.client().put("/v1/user/notifications", json={"urls": [target.url()]})
        assert response.status_code == 200, response.text
        yield r


def outbox(r: Rig) -> list[tuple[Any, ...]]:
    found = rows(r.db_dir / "download_queue.db", "SELECT * FROM outbox ORDER BY id")
    return [(row["event"], row["user"], row["state"], row["attempts"]) for row in found]


def delivered(r: Rig) -> bool:
    return outbox(r) == [("request.completed", "admin", "sent", 1)]


PENDING = [("request.completed", "admin", "pending", 0)]


def test_a_kill_right_after_the_commit_is_delivered_once_after_the_restart(
    tmp_path: Path, fake: FakeDownloaderProcess, target: Receiver
) -> None:
    with started(tmp_path, fake, target, NOTICE_COMMITTED) as r:
        r.request_albums([0])
        assert r.wait_death() == FAULT_EXIT
        assert outbox(r) == PENDING
        assert target.attempts == 0
        r.start()
        r.wait_for(lambda: delivered(r), 15, "the notification was not delivered")
        time.sleep(1)  # nothing more comes
        assert target.attempts == 1
        assert target.titles() == ["Download complete"]
        assert r.stop() == 0


def test_a_kill_during_the_send_sends_it_again_after_the_restart(
    tmp_path: Path, fake: FakeDownloaderProcess, target: Receiver
) -> None:
    target.hold()
    with started(tmp_path, fake, target) as r:
        r.request_albums([0])
        r.wait_for(lambda: target.attempts == 1, 30, "the notification was not sent")
        assert r.kill() == -9
        assert outbox(r) == PENDING  # the send was never recorded
        target.release()  # the target had the message; its answer goes nowhere
        r.start()
        r.wait_for(lambda: delivered(r), 15, "the notification was not delivered again")
        assert target.attempts == 2
        assert target.received[0] == target.received[1]  # the same message, twice
        assert r.stop() == 0


def test_shutdown_waits_for_a_slow_delivery_within_the_grace(
    tmp_path: Path, fake: FakeDownloaderProcess, target: Receiver
) -> None:
    target.delay = 1.5
    with started(tmp_path, fake, target) as r:
        r.request_albums([0])
        r.wait_for(lambda: target.attempts == 1, 30, "the notification was not sent")
        assert not target.received  # in flight when the signal comes
        began = time.monotonic()
        assert r.stop() == 0
        assert time.monotonic() - began < GRACE_S + 3
        assert delivered(r)
        assert target.titles() == ["Download complete"]


def test_a_delivery_longer_than_the_grace_is_left_pending_and_sent_after_the_next_start(
    tmp_path: Path, fake: FakeDownloaderProcess, target: Receiver
) -> None:
    target.hold()
    with started(tmp_path, fake, target) as r:
        r.request_albums([0])
        r.wait_for(lambda: target.attempts == 1, 30, "the notification was not sent")
        began = time.monotonic()
        assert r.stop() == 0
        took = time.monotonic() - began
        assert GRACE_S - 0.5 < took < GRACE_S + 3, took  # the grace, then no longer
        assert outbox(r) == PENDING
        target.release()
        r.start()
        r.wait_for(lambda: delivered(r), 15, "the notification was not delivered")
        assert target.attempts == 2
        assert r.stop() == 0
