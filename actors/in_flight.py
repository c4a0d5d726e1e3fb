"""The queue item the processor is working on, shared with the API so that a cancel can abandon
it (SPEC §8.3 rev 2).

The processor works on one item at a time inside `working_on`, which gives the item a cancel
scope of its own. Once a cancel has committed, the API calls `abandon` with the ids it made
CANCELLED; if the item in flight is one of them, its scope is cancelled: the step stops at its
next checkpoint (a download's temporary file is removed on the way out, as at shutdown) and the
processor moves on, leaving the item as the cancel left it. The processor and the API run on
the daemon's one trio thread, so nothing here needs a lock.

A claim may take an item in the moment its cancel commits, before the processor works on it:
ids abandoned while a claim runs (`claiming`) are kept for the `working_on` that follows it,
with no checkpoint in between, so that item is abandoned as soon as it begins.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

import trio


class InFlight:
    def __init__(self) -> None:
        self._item: str | None = None
        self._scope: trio.CancelScope | None = None
        self._claiming = False
        self._abandoned_in_claim: set[str] = set()

    @contextmanager
    def claiming(self) -> Iterator[None]:
        """Around a claim: what is abandoned meanwhile is kept for the item it returns."""
        self._abandoned_in_claim = set()
        self._claiming = True
        try:
            yield
        finally:
            self._claiming = False

    @contextmanager
    def working_on(self, item_id: str) -> Iterator[trio.CancelScope]:
        """Work on `item_id` inside the scope this yields; `abandon` cancels it. An item
        abandoned during the claim that returned it is cancelled from the start."""
        with trio.CancelScope() as scope:
            if item_id in self._abandoned_in_claim:
                scope.cancel()
            self._abandoned_in_claim = set()
            self._item, self._scope = item_id, scope
            try:
                yield scope
            finally:
                self._item = self._scope = None

    def abandon(self, item_ids: Collection[str]) -> bool:
        """Stop work on any of `item_ids` (items just made CANCELLED); True if the item in
        flight was one of them."""
        if self._claiming:
            self._abandoned_in_claim.update(item_ids)
        if self._scope is None or self._item not in item_ids:
            return False
        self._scope.cancel()
        return True
