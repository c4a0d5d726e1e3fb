"""The daemon spaces the collector's full collections out and collects the middle generation
more often; the young one as CPython does."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from daemon.main import FULL_COLLECTION_AFTER, MIDDLE_COLLECTION_AFTER, collect_rarely


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


def test_the_daemon_collects_the_old_generation_rarely_and_the_younger_ones_often(
    thresholds: tuple[int, int, int],
) -> None:
    assert full_collections_during_churn() > 0  # CPython's own setting
    collect_rarely()
    assert gc.get_threshold() == (thresholds[0], MIDDLE_COLLECTION_AFTER, FULL_COLLECTION_AFTER)
    young, middle = (gc.get_stats()[n]["collections"] for n in (0, 1))
    assert full_collections_during_churn() == 0
    young_now, middle_now = (gc.get_stats()[n]["collections"] for n in (0, 1))
    assert young_now > young  # young garbage: collected as before
    # About one middle collection for each MIDDLE_COLLECTION_AFTER + 1 young ones (CPython: 11).
    assert (middle_now - middle) * (MIDDLE_COLLECTION_AFTER + 2) >= young_now - young
