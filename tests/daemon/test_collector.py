"""The daemon spaces the collector's full collections out, and only those."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from daemon.main import FULL_COLLECTION_AFTER, collect_rarely


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def full_collections_during_churn() -> int:
    """Full collections while objects live long enough to reach the old generation, then die
    (as a busy day's requests and downloads do)."""
    gc.collect()
    before = gc.get_stats()[2]["collections"]
    for _ in range(30):
        batch = [[n] for n in range(20_000)]  # alive through many young collections
        del batch
    return gc.get_stats()[2]["collections"] - before


def test_the_daemon_collects_the_old_generation_rarely_and_the_young_as_before(
    thresholds: tuple[int, int, int],
) -> None:
    assert full_collections_during_churn() > 0  # CPython's own setting
    collect_rarely()
    assert gc.get_threshold() == (*thresholds[:2], FULL_COLLECTION_AFTER)
    young_before = gc.get_stats()[0]["collections"]
    assert full_collections_during_churn() == 0
    assert gc.get_stats()[0]["collections"] > young_before  # young garbage: collected as before
