"""The alternation runner and the table every benchmark reports into.

The machine the benchmarks run on is shared and noisy, so no figure is an absolute time: each
one is the ratio of a side under test to a ceiling (or a smaller case) measured in the same run.
`alternate` runs the two sides in turns, A B, B A, A B, ... (the order flips every round, so a
slow drift of the machine weighs on both sides alike), takes the ratio of each pair and reports
the median with the min and max over the pairs. One pair is one figure: a round that happens to
be disturbed shows in min/max without moving the median much.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stats:
    """Median, min and max of a few figures."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("no figures to summarise")
        return cls(statistics.median(values), min(values), max(values), len(values))


@dataclass(frozen=True)
class Pairs:
    """The figures of each side, round by round, and the per-pair ratios A / B."""

    a: list[float]
    b: list[float]

    @property
    def ratios(self) -> list[float]:
        return [x / y for x, y in zip(self.a, self.b, strict=True)]

    def ratio(self) -> Stats:
        return Stats.of(self.ratios)

    def side_a(self) -> Stats:
        return Stats.of(self.a)

    def side_b(self) -> Stats:
        return Stats.of(self.b)


def _order(round_: int) -> tuple[int, int]:
    return (0, 1) if round_ % 2 == 0 else (1, 0)


def alternate(a: Callable[[], float], b: Callable[[], float], rounds: int) -> Pairs:
    """Run `a` and `b` `rounds` times each, in alternating order; each returns one figure."""
    figures: tuple[list[float], list[float]] = ([], [])
    sides = (a, b)
    for round_ in range(rounds):
        for side in _order(round_):
            figures[side].append(sides[side]())
    return Pairs(*figures)


async def alternate_async(
    a: Callable[[], Awaitable[float]], b: Callable[[], Awaitable[float]], rounds: int
) -> Pairs:
    """`alternate` for sides that are coroutines (run inside one trio run)."""
    figures: tuple[list[float], list[float]] = ([], [])
    sides = (a, b)
    for round_ in range(rounds):
        for side in _order(round_):
            figures[side].append(await sides[side]())
    return Pairs(*figures)


@dataclass(frozen=True)
class Target:
    """A bound the median ratio should respect, e.g. `Target(">=", 0.8)`."""

    op: str
    bound: float

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError(f"unknown comparison {self.op!r}")

    def met(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.bound:g}"


@dataclass(frozen=True)
class Row:
    """One line of the table: what was compared, the ratio, the target, the absolute figures."""

    benchmark: str
    measure: str
    ratio: Stats
    target: Target | None = None
    detail: str = ""
    notes: list[str] = field(default_factory=list, compare=False)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "—"
        return "met" if self.target.met(self.ratio.median) else "**missed**"


HEADER = (
    "| benchmark | measure | ratio (median) | min | max | target | result | absolute figures |\n"
    "|---|---|---|---|---|---|---|---|"
)


def fmt(value: float) -> str:
    """Three significant figures, no exponent for the ranges seen here."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_row(row: Row) -> str:
    target = str(row.target) if row.target is not None else "—"
    cells = [
        row.benchmark,
        row.measure,
        fmt(row.ratio.median),
        fmt(row.ratio.low),
        fmt(row.ratio.high),
        target,
        row.verdict,
        row.detail,
    ]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def format_table(rows: Sequence[Row]) -> str:
    return "\n".join([HEADER, *(format_row(row) for row in rows)])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.2f} s"


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0 < q < 100) by the inclusive method; needs two samples."""
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=1000, method="inclusive")[round(q * 10) - 1]


def run_alone(
    argv: Sequence[str] | None,
    run: Callable[[Any], list[Row]],
    params: tuple[Any, Any],
    *,
    quick_help: str,
    knob: str,
) -> int:
    """`python -m bench.<module>` of the benchmark whose `run` this is (its module's docstring
    as the help): its `params` (default, `--quick`), one of their int fields (`knob`) settable
    as `--<knob>`; prints the table and the time it took."""
    default, quick = params
    module = sys.modules[run.__module__]  # `__main__` under `python -m`, named by its spec
    parser = argparse.ArgumentParser(
        prog=f"python -m {module.__spec__.name if module.__spec__ else module.__name__}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(f"--{knob}", type=int, help=f"{knob} (default {getattr(default, knob)})")
    args = parser.parse_args(argv)
    chosen = quick if args.quick else default
    if getattr(args, knob) is not None:
        chosen = dataclasses.replace(chosen, **{knob: getattr(args, knob)})
    started = time.monotonic()
    print(format_table(run(chosen)))
    print(f"took {time.monotonic() - started:.0f} s")
    return 0
