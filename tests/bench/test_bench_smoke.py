"""The benchmark suite at toy scale, so its code cannot rot between `make bench` runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import bulk_retry, notify_drain, queue_scaling, tick
from bench.common import Row, Stats, Target, alternate, format_table

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`


def test_alternation_flips_the_order_and_pairs_the_figures() -> None:
    calls: list[str] = []
    a_figures = iter([2.0, 4.0, 6.0, 8.0])
    b_figures = iter([1.0, 1.0, 2.0, 4.0])

    def a() -> float:
        calls.append("a")
        return next(a_figures)

    def b() -> float:
        calls.append("b")
        return next(b_figures)

    pairs = alternate(a, b, 4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert pairs.ratios == [2.0, 4.0, 3.0, 2.0]
    assert pairs.ratio() == Stats(median=2.5, low=2.0, high=4.0, n=4)


def test_a_row_says_whether_its_target_is_met() -> None:
    met = Row("x", "m", Stats(0.9, 0.8, 1.0, 3), Target(">=", 0.8), "abs")
    missed = Row("x", "m", Stats(1.6, 1.2, 2.0, 3), Target("<=", 1.5))
    table = format_table([met, missed])
    assert "| x | m | 0.9 | 0.8 | 1.00 | ≥ 0.8 | met | abs |" in table
    assert "| **missed** |" in table.splitlines()[-1]


def test_queue_scaling_at_toy_scale_reports_every_row() -> None:
    rows = queue_scaling.run(queue_scaling.SMOKE)
    assert [r.measure.split(":")[0] for r in rows] == [
        "claim + complete", "claim + complete", "queue_position", "my-requests",
    ]  # fmt: skip
    for row in rows:
        assert row.ratio.n == queue_scaling.SMOKE.rounds
        assert 0 < row.ratio.low <= row.ratio.median <= row.ratio.high
        assert row.verdict in ("met", "**missed**")


def test_tick_at_toy_scale_puts_the_fixed_tick_far_behind_the_continuous_processor() -> None:
    rows = tick.run(tick.SMOKE)
    assert [r.benchmark for r in rows] == ["tick", "tick"]
    assert rows[0].ratio.median > 1  # a tick per item is slower than working back to back


def test_bulk_retry_at_toy_scale_reports_both_rows() -> None:
    rows = bulk_retry.run(bulk_retry.SMOKE)
    assert [r.benchmark for r in rows] == ["bulk_retry", "bulk_retry"]
    assert all(r.ratio.n == bulk_retry.SMOKE.rounds for r in rows)
    assert rows[1].ratio.median < 1  # per item, a bulk retry costs less than a single one


def test_notify_drain_at_toy_scale_tries_the_dead_target_and_reports_its_row() -> None:
    [row] = notify_drain.run(notify_drain.SMOKE)
    assert (row.benchmark, row.ratio.n) == ("notify_drain", notify_drain.SMOKE.rounds)
    albums = (notify_drain.SMOKE.rounds + 1) * notify_drain.SMOKE.albums_per_round
    assert f"{albums} notifications to the dead target" in row.detail
    assert row.detail.endswith(" 0 delivered")


def test_a_partial_run_keeps_the_other_rows_and_the_notes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "benchmarks.md"
    old_row = "| api | GET /x | 0.5 | 0.4 | 0.6 | ≥ 0.6 | **missed** | 1 req/s |"
    doc.write_text(f"# old\n{old_row}\n{bench_main.KEEP_MARKER}\n\n## Notes\nkept\n")
    monkeypatch.setattr(bench_main, "DOC", doc)
    row = Row("tick", "album", Stats(16.0, 15.0, 17.0, 3))
    monkeypatch.setattr("bench.tick.run", lambda: [row])
    assert bench_main.main(["tick"]) == 0
    text = doc.read_text()
    assert old_row in text
    assert "| tick | album | 16.0 | 15.0 | 17.0 | — | — |  |" in text
    assert text.index("| api |") < text.index("| tick |")
    assert text.endswith("\n\n## Notes\nkept\n")
    assert "Machine: " in text and "Python 3." in text
