"""Runtime knobs of the fake downloader: latency, throttling, injected failures and faults.

A `Knobs` instance is shared with the running app and read on every request, so an in-process
test can change any field (or call `fail` / `fault`) while the server runs. It also records
per-endpoint request counts and how many audio downloads are streaming right now.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import trio

ENDPOINTS = (
    "search", "discography", "album", "album_tracks", "artist", "track", "audio", "image",
)  # fmt: skip
BYTES_ENDPOINTS = frozenset({"audio", "image"})
FAULT_MODES = (
    "truncate", "stall", "stall_body", "endless", "trickle", "bad_json", "content_type",
)  # fmt: skip
# The JSON shapes served: the plan's, or those of the service users actually run (SPEC §12.1).
SHAPES = ("plan", "real")
ANY = "*"


def _check_endpoint(endpoint: str) -> None:
    if endpoint != ANY and endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")


def _check_times(times: int | None) -> None:
    if times is not None and times < 0:
        raise ValueError("times must not be negative")


@dataclass
class FailRule:
    """Answer `status` on `endpoint` ("*" = all) with probability `rate`, at most `times` times."""

    endpoint: str
    status: int
    rate: float = 1.0
    times: int | None = None

    def __post_init__(self) -> None:
        _check_endpoint(self.endpoint)
        _check_times(self.times)
        if not 100 <= self.status <= 599:
            raise ValueError(f"not an HTTP status: {self.status}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1]: {self.rate}")

    def matches(self, endpoint: str) -> bool:
        return self.endpoint in (ANY, endpoint)


@dataclass
class Fault:
    """A hostile response mode on `endpoint` ("*" = all) for the next `times` requests.

    Modes: ``truncate`` (announce Content-Length N, close after N/2 bytes), ``stall`` (send
    headers, wait `stall_seconds`, then the body), ``stall_body`` (send half the body, wait
    `stall_seconds`, then close short), ``endless`` (no Content-Length, the body repeats until
    the client hangs up), ``trickle`` (``endless`` at 512 bytes a second), ``bad_json``
    (invalid JSON on a JSON endpoint; never applies to audio or image) and ``content_type``
    (the normal body labelled `content_type`).
    Faults only apply to requests that would otherwise succeed. `times=None` means forever.
    """

    mode: str
    endpoint: str = ANY
    times: int | None = None
    content_type: str = "text/html"
    stall_seconds: float = 3600.0

    def __post_init__(self) -> None:
        _check_endpoint(self.endpoint)
        _check_times(self.times)
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault {self.mode!r}; expected one of {FAULT_MODES}")

    def applies_to(self, endpoint: str) -> bool:
        if self.endpoint not in (ANY, endpoint):
            return False
        return not (self.mode == "bad_json" and endpoint in BYTES_ENDPOINTS)


@dataclass
class Knobs:
    """Mutable behaviour of a running fake downloader (see the module docstring)."""

    shapes: str = "plan"
    latency_ms: float = 0.0
    audio_bytes_per_sec: int = 0
    audio_content_type: str = "audio/flac"
    allow_parallel_audio: bool = False
    retry_after_s: int = 1
    not_found_ids: set[str] = field(default_factory=set)
    fail_rules: list[FailRule] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    fail_seed: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    active_audio: int = 0
    # Where to log every response (`fake_downloader.response_log`); None = no log.
    response_log: TextIO | None = None
    rng: random.Random = field(init=False, repr=False)
    _changes: trio.lowlevel.ParkingLot = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.shapes not in SHAPES:
            raise ValueError(f"unknown shapes {self.shapes!r}; expected one of {SHAPES}")
        self.rng = random.Random(self.fail_seed)
        self._changes = trio.lowlevel.ParkingLot()

    def changed(self) -> None:
        """Called by the app when a request arrives or an audio download starts or ends."""
        self._changes.unpark_all()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait (no polling) until `condition()` holds, e.g. `lambda: knobs.active_audio > 0`."""
        while not condition():
            await self._changes.park()

    def fail(
        self, endpoint: str, status: int, rate: float = 1.0, *, times: int | None = None
    ) -> FailRule:
        """Add (and return) a `FailRule`."""
        rule = FailRule(endpoint, status, rate, times)
        self.fail_rules.append(rule)
        return rule

    def fault(
        self,
        mode: str,
        endpoint: str = ANY,
        *,
        times: int | None = None,
        content_type: str = "text/html",
        stall_seconds: float = 3600.0,
    ) -> Fault:
        """Add (and return) a `Fault`; e.g. ``knobs.fault("truncate", "audio", times=2)``."""
        added = Fault(mode, endpoint, times, content_type, stall_seconds)
        self.faults.append(added)
        return added

    def reseed(self, seed: int) -> None:
        """Restart the failure-injection random sequence from `seed`."""
        self.fail_seed = seed
        self.rng = random.Random(seed)

    def clear(self) -> None:
        """Drop every fail rule, fault and extra not-found id."""
        self.fail_rules.clear()
        self.faults.clear()
        self.not_found_ids.clear()

    def count(self, endpoint: str | None = None) -> int:
        """Requests seen on `endpoint` (all endpoints when None, unknown routes included)."""
        return self.counts.total() if endpoint is None else self.counts[endpoint]

    def reset_counts(self) -> None:
        self.counts.clear()

    def draw_failure(self, endpoint: str) -> int | None:
        """Status to inject for this request, if any; one random draw per matching rule."""
        for rule in list(self.fail_rules):
            if rule.times == 0:
                self.fail_rules.remove(rule)
                continue
            if not rule.matches(endpoint) or self.rng.random() >= rule.rate:
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self.fail_rules.remove(rule)
            return rule.status
        return None

    def take_fault(self, endpoint: str) -> Fault | None:
        """The first fault applying to this request, consuming one of its `times`."""
        for fault in list(self.faults):
            if fault.times == 0:
                self.faults.remove(fault)
                continue
            if not fault.applies_to(endpoint):
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            return fault
        return None


def parse_fail(text: str) -> FailRule:
    """Parse ``ENDPOINT:STATUS:RATE`` (RATE defaults to 1)."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"expected ENDPOINT:STATUS:RATE, got {text!r}")
    rate = float(parts[2]) if len(parts) == 3 else 1.0
    return FailRule(parts[0], int(parts[1]), rate)


def parse_fault(text: str) -> Fault:
    """Parse ``MODE:ENDPOINT[:TIMES]``; MODE is a fault mode or ``content_type=TYPE``."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"expected MODE:ENDPOINT[:TIMES], got {text!r}")
    mode, _, content_type = parts[0].partition("=")
    times = int(parts[2]) if len(parts) == 3 else None
    if mode == "content_type" and not content_type:
        raise ValueError("content_type fault needs a type, e.g. content_type=text/html")
    return Fault(mode, parts[1], times, content_type or "text/html")
