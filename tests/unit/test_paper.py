"""The paper venue: slippage, fees, IOC limit semantics, partial fills."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from ttquant_tasks.gateway.exchanges import Exchange
from ttquant_tasks.gateway.exchanges.paper import PaperExchange
from ttquant_tasks.gateway.orders import Code, Fill, OrderRequest, Rejection

D = Decimal
NOW = 1_732_540_000_000_000_000


def order(side: str = "BUY", price: str = "0", qty: str = "2") -> OrderRequest:
    return OrderRequest("o1", "s1", "BTCUSDT", side, D(price), D(qty), NOW - 1)  # type: ignore[arg-type]


def paper(**kw: object) -> PaperExchange:
    ids = itertools.count(1)
    args: dict[str, object] = {
        "slippage_bps": D(10),
        "commission_bps": D("7.5"),
        "clock": lambda: NOW,
        "id_factory": lambda: f"p{next(ids)}",
    }
    args.update(kw)
    return PaperExchange(**args)  # type: ignore[arg-type]


def test_is_an_exchange() -> None:
    ex: Exchange = paper()
    assert isinstance(ex.submit(order(), D(100)), list)


@pytest.mark.parametrize(
    ("side", "price"),
    [("BUY", "100.100"), ("SELL", "99.900")],  # 10 bps against the taker
)
def test_market_order_fills_with_slippage_and_commission(side: str, price: str) -> None:
    fills = paper().submit(order(side=side), D(100))
    assert fills == [
        Fill("p1", "o1", "s1", "BTCUSDT", side, D(price), D(2), D(price) * 2 * D("7.5") / 10_000, NOW)  # type: ignore[arg-type]
    ]


def test_commission_is_exact() -> None:
    fills = paper().submit(order(qty="0.001"), D("64000"))
    assert isinstance(fills, list) and fills[0].commission == D("0.048048")  # 64064 * 0.001 * 0.00075


@pytest.mark.parametrize(
    ("side", "limit", "expected"),
    [
        ("BUY", "100.1", D("100.100")),  # exactly the execution price: fills
        ("BUY", "105", D("100.100")),  # better limit: fills at the market, not the limit
        ("BUY", "100.09", Code.NOT_FILLED),  # below market + slippage
        ("SELL", "99.9", D("99.900")),
        ("SELL", "95", D("99.900")),
        ("SELL", "99.91", Code.NOT_FILLED),
    ],
)
def test_limit_orders_are_immediate_or_cancel(side: str, limit: str, expected: Decimal | int) -> None:
    result = paper().submit(order(side=side, price=limit), D(100))
    if isinstance(expected, Decimal):
        assert isinstance(result, list) and [f.price for f in result] == [expected]
    else:
        assert isinstance(result, Rejection) and result.code == expected and not result.retryable
        assert "does not cross" in result.reason


@pytest.mark.parametrize("last", [None, D(0)])
def test_no_market_price_is_a_retryable_rejection(last: Decimal | None) -> None:
    result = paper().submit(order(), last)
    assert result == Rejection(Code.NO_MARKET_PRICE, "no market price for BTCUSDT", retryable=True)


@pytest.mark.parametrize(
    ("ratio", "qty", "parts"),
    [
        (None, "2", ["2"]),
        (D(1), "2", ["2"]),
        (D("0.5"), "2", ["1.0", "1.0"]),
        (D("0.3"), "1", ["0.3", "0.3", "0.3", "0.1"]),
        (D("0.25"), "0.001", ["0.00025"] * 4),
    ],
)
def test_partial_fills_add_up_exactly(ratio: Decimal | None, qty: str, parts: list[str]) -> None:
    fills = paper(partial_fill_ratio=ratio).submit(order(qty=qty), D(100))
    assert isinstance(fills, list)
    assert [f.quantity for f in fills] == [D(p) for p in parts]
    assert sum((f.quantity for f in fills), D(0)) == D(qty)
    assert len({f.trade_id for f in fills}) == len(fills)
    assert sum((f.commission for f in fills), D(0)) == D("100.100") * D(qty) * D("7.5") / 10_000


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"slippage_bps": D(-1)}, "slippage_bps"),
        ({"slippage_bps": D(10_000)}, "below 10000"),
        ({"commission_bps": D("NaN")}, "commission_bps"),
        ({"partial_fill_ratio": D(0)}, "partial_fill_ratio"),
        ({"partial_fill_ratio": D("1.5")}, "partial_fill_ratio"),
    ],
)
def test_bad_settings_are_refused(kw: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        paper(**kw)
