"""The background-job interface: what a job is, when it runs, how it stops.

A job is a `JobSpec`: an id, a name, a description, a `Schedule`, a `ShutdownBehavior` and an
async body. Bodies are built by factories that close over what they need (stores, settings), so
the scheduler knows nothing about any particular job. A body returns an optional report (a small
JSON-able dict stored with the run); raising makes the run `failed` with the exception's message;
being cancelled makes it `cancelled`.

When a schedule has both a cron expression and an interval, the job is due at whichever comes
first; the interval counts from the previous due time so it does not drift with run length.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from croniter import croniter

from actors.messages import Hook

JobBody = Callable[[], Awaitable[dict[str, Any] | None]]


def utc_now() -> datetime:
    """The default wall clock: aware UTC (jobs and the scheduler take it injectable)."""
    return datetime.now(UTC)


class ShutdownBehavior(StrEnum):
    CANCELLABLE = "cancellable"
    WAIT_FOR_COMPLETION = "wait_for_completion"


class InvalidSchedule(ValueError):
    """A schedule that could never fire or cannot be parsed."""


@dataclass(frozen=True)
class Schedule:
    """When a job runs: a 5-field UTC cron expression, an interval, hooks, or several of them."""

    cron: str | None = None
    interval_secs: float | None = None
    hooks: tuple[Hook, ...] = ()

    def __post_init__(self) -> None:
        if self.cron is None and self.interval_secs is None and not self.hooks:
            raise InvalidSchedule("a schedule needs a cron expression, an interval or a hook")
        if self.cron is not None and (
            len(self.cron.split()) != 5 or not croniter.is_valid(self.cron)
        ):
            raise InvalidSchedule(f"invalid 5-field cron expression {self.cron!r}")
        if self.interval_secs is not None and not self.interval_secs > 0:
            raise InvalidSchedule("interval_secs must be positive")

    @property
    def kind(self) -> str:
        """The JSON `type`: cron, interval, hook, or combined when more than one is set."""
        kinds = [
            name
            for name, present in (
                ("cron", self.cron is not None),
                ("interval", self.interval_secs is not None),
                ("hook", bool(self.hooks)),
            )
            if present
        ]
        return kinds[0] if len(kinds) == 1 else "combined"

    @property
    def timed(self) -> bool:
        return self.cron is not None or self.interval_secs is not None

    def next_due(self, now: datetime, previous_due: datetime | None = None) -> datetime | None:
        """The first due time after `now` (None for hook-only schedules).

        The interval counts from `previous_due` when that still lands in the future, so runs
        stay on their grid; after a stall it restarts from `now`.
        """
        candidates: list[datetime] = []
        if self.cron is not None:
            candidates.append(croniter(self.cron, now).get_next(datetime))
        if self.interval_secs is not None:
            step = timedelta(seconds=self.interval_secs)
            on_grid = previous_due + step if previous_due is not None else None
            candidates.append(on_grid if on_grid is not None and on_grid > now else now + step)
        return min(candidates) if candidates else None


@dataclass(frozen=True)
class JobSpec:
    id: str
    name: str
    description: str
    schedule: Schedule
    shutdown: ShutdownBehavior
    run: JobBody
