"""Login throttling: too many failed logins from one address, or for one handle, answer 429.

A sliding window per key (client address, handle) held in memory: a restart forgets it, which is
acceptable for a single-process server. Keys whose failures have all aged out are dropped, when
they are next looked at and by a sweep of the whole table each time it has doubled since the
last one, so the table stays bounded by recent attackers, not by history: guesses spread over
ever new addresses and handles cannot grow it without end.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

SWEEP_FLOOR = 1024  # keys held before the first sweep of aged-out keys


class LoginThrottle:
    def __init__(
        self,
        max_failures: int = 10,
        window_secs: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_secs = window_secs
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._sweep_above = SWEEP_FLOOR

    def __len__(self) -> int:
        """Keys held: those with a failure in the window, and aged-out ones not yet dropped."""
        return len(self._failures)

    def retry_after(self, *keys: str) -> int | None:
        """Seconds until a login may be tried again for these keys, or None if allowed now."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self.max_failures:
                wait = max(wait, times[0] + self.window_secs - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)
            self._recent(key, now)
        if len(self._failures) > self._sweep_above:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Drop every aged-out key; the next sweep waits until the table has doubled, so a
        failure costs amortised constant time."""
        for key in list(self._failures):
            self._recent(key, now)
        self._sweep_above = max(SWEEP_FLOOR, 2 * len(self._failures))

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_secs:
            times.popleft()
        if not times:
            del self._failures[key]
        return times
