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


def test_journal_snapshots_newer_than_the_save_win(tmp_path: Path) -> None:
    path = state.state_path(tmp_path)
    assert state.saved_journal_seq(path) is None
    assert state.save(path, [pos("a", "1")], saved_ns=123, journal_seq=10)
    assert state.saved_journal_seq(path) == 10

    def snap(qty: str) -> dict[str, str]:
        return {"kind": "position", "position": qty, "avg_price": "64000.5", "realized_pnl": "-0.5", "fees": "0.5"}

    journal = {("a", "BTCUSDT"): (11, snap("1.5")), ("b", "BTCUSDT"): (9, snap("7")),
               ("c", "BTCUSDT"): (12, snap("2"))}
    merged = {p.strategy_id: p for p in state.from_journal([pos("a", "1"), pos("b", "5")], journal, saved_seq=10)}
    assert {k: p.quantity for k, p in merged.items()} == {"a": Decimal("1.5"), "b": Decimal("5"), "c": Decimal("2")}
    assert merged["a"].fees == Decimal("0.5") and merged["a"].realized_pnl == Decimal("-0.5")
    # no saved record (or one from before the journal): every journaled snapshot is newer
    unsaved = {p.strategy_id: p.quantity for p in state.from_journal([pos("b", "5")], journal, saved_seq=None)}
    assert unsaved == {"a": Decimal("1.5"), "b": Decimal("7"), "c": Decimal("2")}


def test_unreadable_journal_snapshot_is_ignored() -> None:
    journal = {("a", "BTCUSDT"): (11, {"kind": "position", "position": "not a number"})}
    assert state.from_journal([pos("a", "1")], journal, saved_seq=None) == [pos("a", "1")]
