"""Average-cost position accounting: exact tables, then a cash-flow property."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttquant_tasks.gateway.orders import Fill
from ttquant_tasks.gateway.positions import Position, apply_fill, unrealized_pnl

D = Decimal


def fill(side: str, qty: str, price: str, fee: str = "0", strategy: str = "s1", symbol: str = "BTCUSDT") -> Fill:
    return Fill("t", "o", strategy, symbol, side, D(price), D(qty), D(fee), 0)  # type: ignore[arg-type]


def run(*fills: Fill) -> Position:
    pos = Position("s1", "BTCUSDT")
    for f in fills:
        pos = apply_fill(pos, f)
    return pos


def state(pos: Position) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return pos.quantity, pos.avg_price, pos.realized_pnl, pos.fees


@pytest.mark.parametrize(
    ("fills", "expected"),
    [
        # (quantity, avg_price, realized_pnl, fees)
        ([fill("BUY", "1", "100")], ("1", "100", "0", "0")),
        ([fill("BUY", "1", "100"), fill("BUY", "3", "120")], ("4", "115", "0", "0")),  # long add
        ([fill("BUY", "2", "100"), fill("SELL", "0.5", "110")], ("1.5", "100", "5", "0")),  # long reduce
        ([fill("BUY", "2", "100"), fill("SELL", "0.5", "90")], ("1.5", "100", "-5", "0")),  # at a loss
        ([fill("BUY", "2", "100"), fill("SELL", "2", "110")], ("0", "0", "20", "0")),  # close
        ([fill("SELL", "2", "100")], ("-2", "100", "0", "0")),  # open short
        ([fill("SELL", "1", "100"), fill("SELL", "1", "90")], ("-2", "95", "0", "0")),  # short add
        ([fill("SELL", "2", "100"), fill("BUY", "1", "90")], ("-1", "100", "10", "0")),  # short reduce
        ([fill("SELL", "2", "100"), fill("BUY", "2", "110")], ("0", "0", "-20", "0")),  # short close
        ([fill("BUY", "1", "100"), fill("SELL", "3", "110")], ("-2", "110", "10", "0")),  # long->short
        ([fill("SELL", "1", "100"), fill("BUY", "3", "90")], ("2", "90", "10", "0")),  # short->long
        ([fill("BUY", "1", "100", "0.1"), fill("SELL", "1", "101", "0.101")], ("0", "0", "0.799", "0.201")),
        ([fill("BUY", "0.001", "64321.12"), fill("BUY", "0.002", "64321.15")], ("0.003", "64321.14", "0", "0")),
        ([fill("BUY", "1", "100"), fill("SELL", "1", "110"), fill("BUY", "1", "105")], ("1", "105", "10", "0")),
    ],
)
def test_apply_fill_table(fills: list[Fill], expected: tuple[str, str, str, str]) -> None:
    assert state(run(*fills)) == tuple(D(x) for x in expected)


def test_unrealized_pnl_long_short_flat() -> None:
    assert unrealized_pnl(run(fill("BUY", "2", "100")), D("103.5")) == D("7.0")
    assert unrealized_pnl(run(fill("SELL", "2", "100")), D("103.5")) == D("-7.0")
    assert unrealized_pnl(run(), D("103.5")) == 0


def test_results_are_exact_decimals_not_floats() -> None:
    # With floats 0.1 + 0.2 != 0.3; here avg = (0.01 + 0.09) / 0.4 = 0.25, pnl = 0.05 * 0.4 - fee.
    pos = run(fill("BUY", "0.1", "0.1"), fill("BUY", "0.3", "0.3"), fill("SELL", "0.4", "0.3", "0.0001"))
    assert state(pos) == (D(0), D(0), D("0.0199"), D("0.0001"))


def test_fill_for_another_position_is_refused() -> None:
    with pytest.raises(ValueError, match="is for s2/BTCUSDT, position is s1/BTCUSDT"):
        apply_fill(Position("s1", "BTCUSDT"), fill("BUY", "1", "1", strategy="s2"))
    with pytest.raises(ValueError, match="quantity 0"):
        apply_fill(Position("s1", "BTCUSDT"), fill("BUY", "0", "1"))


_fills = st.lists(
    st.tuples(
        st.sampled_from(["BUY", "SELL"]),
        st.decimals(min_value=D("0.001"), max_value=D(50), places=3),
        st.decimals(min_value=D("0.01"), max_value=D(100_000), places=2),
        st.decimals(min_value=D(0), max_value=D(5), places=4),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(_fills, st.decimals(min_value=D("0.01"), max_value=D(100_000), places=2))
def test_realized_plus_unrealized_equals_cash_flow_pnl(
    raw: list[tuple[str, Decimal, Decimal, Decimal]], mark: Decimal
) -> None:
    pos = Position("s1", "BTCUSDT")
    cash = D(0)
    for side, qty, price, fee in raw:
        pos = apply_fill(pos, fill(side, str(qty), str(price), str(fee)))
        cash += (-qty if side == "BUY" else qty) * price - fee
    total = pos.realized_pnl + unrealized_pnl(pos, mark)
    expected = cash + pos.quantity * mark
    # Only the average-cost division rounds (28 significant digits): allow that much, no more.
    scale = sum((qty * price for _, qty, price, _ in raw), D(1))
    assert abs(total - expected) <= scale * D("1e-24")
    assert pos.fees == sum((fee for *_, fee in raw), D(0))
    assert pos.quantity == sum(((q if s == "BUY" else -q) for s, q, _, _ in raw), D(0))
