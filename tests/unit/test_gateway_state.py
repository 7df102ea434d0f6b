from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from ttquant_tasks.gateway import state
from ttquant_tasks.gateway.positions import Position


def pos(sid: str, qty: str, realized: str = "0") -> Position:
    return Position(strategy_id=sid, symbol="BTCUSDT", quantity=Decimal(qty), avg_price=Decimal("64000.5"),
                    realized_pnl=Decimal(realized), fees=Decimal("0.01"))


def test_save_and_load_round_trip_exactly(tmp_path: Path) -> None:
    path = state.state_path(tmp_path)
    state.save(path, [pos("a", "0.259", "1.23456789")], saved_ns=123)
    loaded = state.load(path)
    assert loaded == (123, {("a", "BTCUSDT"): pos("a", "0.259", "1.23456789")})


def test_saved_wins_unless_the_database_is_newer() -> None:
    db = [pos("a", "0.247"), pos("b", "1"), pos("c", "2")]
    times = {("a", "BTCUSDT"): 100, ("b", "BTCUSDT"): 300, ("c", "BTCUSDT"): 100}
    saved = (200, {("a", "BTCUSDT"): pos("a", "0.259"), ("b", "BTCUSDT"): pos("b", "5"),
                   ("d", "BTCUSDT"): pos("d", "3")})
    merged = {p.strategy_id: p.quantity for p in state.merge(db, times, saved)}
    assert merged == {"a": Decimal("0.259"), "b": Decimal("1"), "c": Decimal("2"), "d": Decimal("3")}
    assert {p.strategy_id: p.quantity for p in state.merge(db, times, None)} == {
        "a": Decimal("0.247"), "b": Decimal("1"), "c": Decimal("2")}


def test_unreadable_record_is_ignored(tmp_path: Path) -> None:
    path = state.state_path(tmp_path)
    path.write_text('{"saved_ns": 1, "positions": [{"strategy_id": "a"}]}')
    assert state.load(path) is None
    path.write_text("not json")
    assert state.load(path) is None
