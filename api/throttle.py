"""Login throttling (SPEC §4.2 rev 2): failed logins are counted per client address and per
(handle, client address), never per handle alone, so nobody can lock a user out by guessing at
their handle from elsewhere, and behind a trusted proxy one client's failures never hold back
another (the address is the one `api.client` resolves).

Limits: 10 failures within 60 s for one handle from one address (a user mistyping, or a guesser
aiming at one account), and 20 within 60 s from one address whatever the handles (a guesser
spraying one password over many handles). Either answers 429 with `Retry-After` until the oldest
counted failure leaves the window.

Sliding windows held in memory: a restart forgets them, which is acceptable for a
single-process server. Handles are kept as a short digest, so a megabyte-long made-up handle
costs a few bytes. Keys whose failures have all aged out are dropped, when they are next looked
at and by a sweep of the whole table each time it has doubled since the last one, so the table
stays bounded by recent attackers, not by history: guesses spread over ever new addresses and
handles cannot grow it without end.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from collections.abc import Callable

SWEEP_FLOOR = 1024  # keys held before the first sweep of aged-out keys
PER_ADDRESS = 20
PER_HANDLE_AND_ADDRESS = 10
WINDOW_SECS = 60.0

Key = tuple[str, str, bytes]


class LoginThrottle:
    def __init__(
        self,
        per_address: int = PER_ADDRESS,
        per_handle_and_address: int = PER_HANDLE_AND_ADDRESS,
        window_secs: float = WINDOW_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_address = per_address
        self.per_handle_and_address = per_handle_and_address
        self.window_secs = window_secs
        self._clock = clock
        self._failures: dict[Key, deque[float]] = {}
        self._sweep_above = SWEEP_FLOOR

    def __len__(self) -> int:
        """Keys held: those with a failure in the window, and aged-out ones not yet dropped."""
        return len(self._failures)

    def retry_after(self, address: str, handle: str) -> int | None:
        """Seconds until this client may try this handle again, or None if it may now."""
        now = self._clock()
        wait = 0.0
        for key, limit in self._limits(address, handle):
            times = self._recent(key, now)
            if len(times) >= limit:
                wait = max(wait, times[0] + self.window_secs - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, address: str, handle: str) -> None:
        now = self._clock()
        for key, _ in self._limits(address, handle):
            self._failures.setdefault(key, deque()).append(now)
            self._recent(key, now)
        if len(self._failures) > self._sweep_above:
            self._sweep(now)

    def _limits(self, address: str, handle: str) -> tuple[tuple[Key, int], ...]:
        digest = hashlib.blake2b(handle.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        return (
            (("address", address, b""), self.per_address),
            (("handle", address, digest), self.per_handle_and_address),
        )

    def _sweep(self, now: float) -> None:
        """Drop every aged-out key; the next sweep waits until the table has doubled, so a
        failure costs amortised constant time."""
        for key in list(self._failures):
            self._recent(key, now)
        self._sweep_above = max(SWEEP_FLOOR, 2 * len(self._failures))

    def _recent(self, key: Key, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_secs:
            times.popleft()
        if not times:
            del self._failures[key]
        return times
