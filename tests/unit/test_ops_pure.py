"""Pure parts of the maintenance jobs and the status screen."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from ttquant_tasks.ops.marks import snapshot
from ttquant_tasks.ops.metrics import figure_rows
from ttquant_tasks.status import render


def row(position: str, avg: str, upnl: str | None, last: str) -> SimpleNamespace:
    return SimpleNamespace(strategy_id="s1", symbol="BTCUSDT", position=Decimal(position), avg_price=Decimal(avg),
                           unrealized_pnl=None if upnl is None else Decimal(upnl), realized_pnl=Decimal("1.5"),
                           last_price=Decimal(last))


def test_snapshot_marks_long_and_short_exactly() -> None:
    long = snapshot(row("0.3", "60000.10", "0", "60100.20"))
    assert long is not None and long["unrealized_pnl"] == Decimal("30.030")
    short = snapshot(row("-2", "100", None, "90.5"))
    assert short is not None and short["unrealized_pnl"] == Decimal("19.0") and short["realized_pnl"] == Decimal("1.5")


def test_snapshot_unchanged_pnl_writes_nothing() -> None:
    assert snapshot(row("0.3", "60000.10", "30.030", "60100.20")) is None


def test_figure_rows_skip_unknown_depths() -> None:
    rows = figure_rows(120, 60.0, {"ticks": 3, "orders": None, "parked": 2}, {"BTCUSDT": 1.5})
    assert rows == [("db", "ticks_per_s", 2.0), ("broker", "depth.ticks", 3.0), ("broker", "parked", 2.0),
                    ("feed.BTCUSDT", "lag_s", 1.5)]


def test_render_names_what_is_unavailable() -> None:
    screen = render({"time": 0.0, "database": "postgresql://u:***@h/db", "broker": "redis://h/0",
                     "celery_error": "OperationalError: refused", "db_error": "DatabaseUnavailable: down",
                     "backup": {"path": "/b/ttquant-x.dump", "age_s": 7200, "size_bytes": 2_000_000}, "feed": None})
    assert "celery    unavailable: OperationalError: refused" in screen
    assert "db        unavailable: DatabaseUnavailable: down" in screen
    assert "backup    /b/ttquant-x.dump (2.0 MB), 2.0h old" in screen


def test_render_shows_chunks_awaiting_confirmation() -> None:
    feed = {"pid": 7, "time": 0.0, "counts": {"ticks": 10, "confirm": {"pending": 3, "resent": 1, "given_up": 0}}}
    screen = render({"time": 1.0, "database": "d", "broker": "b", "feed": feed})
    assert "confirm   3 chunks awaiting their rows, 1 resent, 0 given up" in screen
