"""SimSource: consecutive ids per symbol, exact decimals on the tick grid, determinism, pacing."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from ttquant_tasks.feed.sim import SimSource
from ttquant_tasks.models import Tick


def take(src: SimSource, n: int) -> list[Tick]:
    return list(itertools.islice(src, n))


def test_ids_are_consecutive_per_symbol_after_start_ids() -> None:
    ticks = take(SimSource(["BTCUSDT", "ETHUSDT", "XRPUSDT"], "max", seed=3, start_ids={"BTCUSDT": 41}), 3000)
    by_symbol: dict[str, list[int]] = {}
    for t in ticks:
        by_symbol.setdefault(t.symbol, []).append(t.trade_id)
    assert set(by_symbol) == {"BTCUSDT", "ETHUSDT", "XRPUSDT"}
    assert by_symbol["BTCUSDT"] == list(range(42, 42 + len(by_symbol["BTCUSDT"])))
    assert by_symbol["ETHUSDT"] == list(range(1, 1 + len(by_symbol["ETHUSDT"])))
    assert by_symbol["XRPUSDT"] == list(range(1, 1 + len(by_symbol["XRPUSDT"])))


def test_prices_and_quantities_are_exact_decimals_on_the_grid() -> None:
    for t in take(SimSource(["BTCUSDT", "ETHUSDT", "XRPUSDT"], 0, seed=1), 2000):
        price, qty = Decimal(t.price), Decimal(t.qty)
        assert price > 0 and qty > 0
        assert "E" not in t.price and "E" not in t.qty
        if t.symbol == "BTCUSDT":
            assert price.as_tuple().exponent == -2  # "64321.10": tick size 0.01, trailing zero kept
            assert qty.as_tuple().exponent == -5
            assert qty < 1  # fractional quantities


def test_same_seed_same_ticks_except_times() -> None:
    def strip(ts: list[Tick]) -> list[tuple[object, ...]]:
        return [(t.symbol, t.trade_id, t.price, t.qty, t.buyer_maker) for t in ts]

    a = take(SimSource(["BTCUSDT", "ETHUSDT"], "max", seed=7), 500)
    b = take(SimSource(["BTCUSDT", "ETHUSDT"], "max", seed=7), 500)
    c = take(SimSource(["BTCUSDT", "ETHUSDT"], "max", seed=8), 500)
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)
    assert {t.buyer_maker for t in a} == {True, False}


def test_exchange_time_never_goes_backwards_even_if_the_clock_does() -> None:
    clock = iter([100, 200, 150, 300, 250, 400])
    ticks = take(SimSource(["BTCUSDT"], "max", seed=1, clock=lambda: next(clock), exchange="x"), 6)
    assert [t.exchange_time for t in ticks] == [100, 200, 200, 300, 300, 400]
    assert [t.local_time for t in ticks] == [100, 200, 150, 300, 250, 400]
    assert {t.exchange for t in ticks} == {"x"}


class FakeTime:
    """A clock that only moves when the source sleeps (so the test measures pacing, not the machine)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_pacing_sleeps_in_batches_to_hold_the_rate() -> None:
    ft = FakeTime()
    src = SimSource(["BTCUSDT"], 2000, seed=1, monotonic=ft.monotonic, sleep=ft.sleep)
    take(src, 2001)
    assert ft.now - 1000.0 == pytest.approx(1.0, abs=0.006)  # 2000 intervals of 0.5 ms
    assert len(ft.sleeps) <= 200  # batched: about one sleep per 5 ms, not one per tick


def test_unpaced_never_sleeps() -> None:
    ft = FakeTime()
    take(SimSource(["BTCUSDT"], 0, seed=1, monotonic=ft.monotonic, sleep=ft.sleep), 100)
    assert ft.sleeps == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="symbol"):
        SimSource([], 1)
    with pytest.raises(ValueError, match="rate"):
        SimSource(["BTCUSDT"], "fast")
