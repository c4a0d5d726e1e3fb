"""The queue items the processor is working on, shared with the API so that a cancel can abandon
them (SPEC §8.3 rev 2).

The processor works on two items at most, one downloading while the one before it is recorded,
each inside `working_on`, which gives the item a cancel scope of its own. Once a cancel has
committed, the API calls `abandon` with the ids it made CANCELLED; the scope of each item in
flight among them is cancelled: its step stops at its next checkpoint (a download's temporary
file is removed on the way out, as at shutdown) and the processor moves on, leaving the item as
the cancel left it. The processor and the API run on the daemon's one trio thread, so nothing
here needs a lock.

An item is registered as its claim returns (`claimed`, with no checkpoint in between), before
the task that works on it begins, so a cancel never falls between the two. A claim may take an
item in the moment its cancel commits: ids abandoned while a claim runs (`claiming`) are kept
for the item it returns, which is then abandoned as soon as it begins.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

import trio


class InFlight:
    def __init__(self) -> None:
        self._scopes: dict[str, trio.CancelScope] = {}  # by item id, entered or about to be
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

    def claimed(self, item_id: str) -> None:
        """Register the item a claim has just returned: `abandon` reaches it from now on, and
        it is cancelled already if it was abandoned during its claim."""
        scope = trio.CancelScope()
        if item_id in self._abandoned_in_claim:
            scope.cancel()
        self._abandoned_in_claim = set()
        self._scopes[item_id] = scope

    @contextmanager
    def working_on(self, item_id: str) -> Iterator[trio.CancelScope]:
        """Work on `item_id` inside the scope this yields (the one `claimed` registered, if
        any); `abandon` cancels it."""
        scope = self._scopes.setdefault(item_id, trio.CancelScope())
        try:
            with scope:
                yield scope
        finally:
            del self._scopes[item_id]

    def abandon(self, item_ids: Collection[str]) -> bool:
        """Stop work on any of `item_ids` (items just made CANCELLED); True if an item in
        flight was one of them."""
        if self._claiming:
            self._abandoned_in_claim.update(item_ids)
        stopped = [scope for item_id, scope in self._scopes.items() if item_id in item_ids]
        for scope in stopped:
            scope.cancel()
        return bool(stopped)
