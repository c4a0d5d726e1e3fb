"""Chaos: a real `pezzottify-server` killed mid-album and restarted until idle (RELIABILITY Q-1..3,
Q-7, F-1, F-5, S-3; SPEC §8.7).

Kills come two ways: SIGKILL at a random moment, and death at a named fault point (the daemon
exits by itself, like a SIGKILL, right after the file write, the fsync, the rename, the directory
fsync, or just before / just after the completion commit). After every death the always-true
invariants are checked on the files (`check_safe`); once a clean incarnation has drained the
queue, the idle ones too (`check_settled`): every requested album COMPLETED, nothing stuck, no
duplicate catalog rows or children, no temporary file, every file equal to the fake's bytes,
`PRAGMA integrity_check` ok, and each completion recorded once.

The random test runs `--chaos-iterations` iterations (3 in `make test`, 30 in `make chaos`); the
seed is printed and `CHAOS_SEED=<seed>` replays a run.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_downloader import CatalogSpec, build_catalog
from tests.reliability.harness import (
    FAULT_EXIT,
    FAULT_POINTS,
    FakeDownloaderProcess,
    Rig,
    chaos_seed,
    rig,
    running_fake,
)
from tests.reliability.invariants import audit_entries, check_safe, check_settled

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

SPEC = CatalogSpec(
    seed=11, artists=4, albums_per_artist=2, tracks_per_album=3, audio_bytes=32 * 1024,
    image_bytes=8 * 1024,
)  # fmt: skip
# A track streams for about a third of a second, so random kills often land mid-download.
AUDIO_BYTES_PER_SEC = 96 * 1024
KILLS = ("sigkill", "sigkill", *FAULT_POINTS)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDownloaderProcess]:
    with running_fake(SPEC, "--audio-bytes-per-sec", str(AUDIO_BYTES_PER_SEC)) as process:
        yield process


def album_ids(indices: list[int]) -> list[str]:
    return [build_catalog(SPEC).album_ids[i] for i in indices]


def recovered_at_restart(r: Rig) -> Counter[str]:
    """How often each item was put back by a restart's recovery."""
    return Counter(
        e["queue_item_id"] for e in audit_entries(r.db_dir)
        if e["event_type"] == "RECOVERED_AFTER_RESTART" and '"restart"' in (e["details"] or "")
    )  # fmt: skip


# Whether the file of the item in flight is under its final name when the daemon dies there.
PUBLISHED = {
    "after_write": False, "after_fsync": False, "after_rename": True, "after_dirfsync": True,
    "before_commit": True,
}  # fmt: skip


def completed_children(r: Rig) -> int:
    return sum(i["status"] == "COMPLETED" and i["parent_id"] is not None for i in r.items())


def in_flight_file(r: Rig) -> Path:
    """The final path of the first child the dead daemon was publishing: of the children left
    IN_PROGRESS (one being fetched, some being published), the one claimed first."""
    in_progress = {i["id"]: i for i in r.items() if i["status"] == "IN_PROGRESS" and i["parent_id"]}
    assert in_progress
    claimed = [
        e["queue_item_id"] for e in audit_entries(r.db_dir)
        if e["event_type"] == "DOWNLOAD_STARTED" and e["queue_item_id"] in in_progress
    ]  # fmt: skip
    item = in_progress[claimed[-len(in_progress)]]
    if item["content_type"] == "TRACK_AUDIO":
        return r.db_dir / "audio" / f"{item['content_id']}.flac"
    return r.db_dir / "images" / f"{item['content_id']}.jpg"


def test_a_kill_at_every_fault_point_in_turn_loses_and_duplicates_nothing(
    tmp_path: Path, fake: FakeDownloaderProcess
) -> None:
    indices = [0, 1, 2]  # albums 0 and 1 share an artist, hence a portrait file
    with rig(tmp_path, fake) as r:
        r.start(fault=FAULT_POINTS[0])
        r.request_albums(indices)
        completed = 0
        for point, following in zip(FAULT_POINTS, [*FAULT_POINTS[1:], None], strict=True):
            status = r.wait_death_or_idle(60)
            assert status == FAULT_EXIT, f"fault point {point} was never reached\n{r.log_tail()}"
            check_safe(r.db_dir, SPEC, album_ids(indices))
            # Published before the commit; a commit survives the kill, an open one leaves nothing.
            if point == "after_commit":  # the batch's completions, one file or more
                assert completed_children(r) > completed
            else:
                assert in_flight_file(r).exists() == PUBLISHED[point], point
                assert completed_children(r) == completed
            completed = completed_children(r)
            r.start(fault=following)
        r.wait_idle(60)
        assert r.stop() == 0, r.log_tail()
        check_settled(r.db_dir, SPEC, album_ids(indices))
        # The first child was delivered once per incarnation that died on it, yet it has one
        # file and one completion (checked above); each death before its commit was recovered.
        # (The child fetched meanwhile, if any, was put back too.)
        claims = [
            e["queue_item_id"] for e in audit_entries(r.db_dir)
            if e["event_type"] == "DOWNLOAD_STARTED" and e["content_type"] != "ALBUM"
        ]  # fmt: skip
        assert claims.count(claims[0]) == len(FAULT_POINTS)
        assert recovered_at_restart(r)[claims[0]] == len(FAULT_POINTS) - 1


@dataclass(frozen=True)
class Plan:
    albums: list[int]  # fake album indices to request
    kills: list[str]  # "sigkill" or a fault point, in order
    delays: list[float]  # seconds before each SIGKILL

    @classmethod
    def draw(cls, rng: random.Random) -> Plan:
        albums = rng.sample(range(SPEC.album_count), rng.randint(1, 3))
        kills = [rng.choice(KILLS) for _ in range(rng.randint(1, 3))]
        return cls(albums, kills, [rng.uniform(0.0, 2.0) for _ in kills])


def run_iteration(root: Path, fake: FakeDownloaderProcess, plan: Plan) -> None:
    faults = [k if k in FAULT_POINTS else None for k in plan.kills]
    wanted = album_ids(plan.albums)
    with rig(root, fake) as r:
        r.start(fault=faults[0])
        r.request_albums(plan.albums)
        for n, kill in enumerate(plan.kills):
            if kill == "sigkill":
                time.sleep(plan.delays[n])
                r.kill()
            elif r.wait_death_or_idle(60) is None:
                r.kill()  # the work ended before the fault point: a kill at idle then
            check_safe(r.db_dir, SPEC, wanted)
            r.start(fault=faults[n + 1] if n + 1 < len(faults) else None)
        r.wait_idle(60)
        assert r.stop() == 0, r.log_tail()
        check_settled(r.db_dir, SPEC, wanted)


def test_random_kills_and_restarts_until_idle(
    tmp_path: Path,
    fake: FakeDownloaderProcess,
    chaos_iterations: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = chaos_seed()
    with capsys.disabled():
        print(f"\nchaos: seed {seed}, {chaos_iterations} iterations (replay: CHAOS_SEED={seed})")
    rng = random.Random(seed)
    for iteration in range(chaos_iterations):
        plan = Plan.draw(rng)
        try:
            run_iteration(tmp_path / f"iteration-{iteration}", fake, plan)
        except Exception as exc:
            raise AssertionError(
                f"chaos seed {seed}, iteration {iteration}, {plan}: {exc!r}"
            ) from exc
