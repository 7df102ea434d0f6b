"""Pre-trade risk checks, order field validation and the limits file: table-driven, edges included."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from ttquant_tasks.errors import ConfigError
from ttquant_tasks.gateway import risk
from ttquant_tasks.gateway.orders import Code, OrderRequest, Rejection, order_from_fields
from ttquant_tasks.gateway.risk import RateState, RiskLimits, check_all, load_limits

D = Decimal
T0 = 1_732_540_000_000_000_000  # ns
MS = 1_000_000
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "risk.example.toml"


def order(
    price: str = "100",
    qty: str = "1",
    side: str = "BUY",
    strategy: str = "s1",
    symbol: str = "BTCUSDT",
    ts: int = T0,
) -> OrderRequest:
    return OrderRequest("o1", strategy, symbol, side, D(price), D(qty), ts)  # type: ignore[arg-type]


def code(r: Rejection | None) -> int | None:
    return None if r is None else r.code


# ------------------------------------------------------------ order_from_fields

GOOD: dict[str, Any] = {
    "order_id": "o1",
    "strategy_id": "s1",
    "symbol": "BTCUSDT",
    "side": "BUY",
    "price": 64321.1,
    "volume": 0,
    "timestamp": T0,
    "quantity": "0.001",
}


def test_fields_become_an_exact_order() -> None:
    o = order_from_fields(**GOOD)
    assert o == OrderRequest("o1", "s1", "BTCUSDT", "BUY", D("64321.1"), D("0.001"), T0)


@pytest.mark.parametrize(
    ("price", "expected"),
    [(0.1, D("0.1")), (64321.1, D("64321.1")), (1e-08, D("1E-8")), (0.0, D(0)), (3, D(3))],
)
def test_double_price_converts_through_repr(price: float, expected: Decimal) -> None:
    o = order_from_fields(**{**GOOD, "price": price})
    assert isinstance(o, OrderRequest) and o.price == expected


def test_volume_is_used_when_the_decimal_quantity_is_absent() -> None:
    for empty in (None, ""):
        o = order_from_fields(**{**GOOD, "quantity": empty, "volume": 3})
        assert isinstance(o, OrderRequest) and o.quantity == D(3)


def test_decimal_quantity_wins_over_volume() -> None:
    o = order_from_fields(**{**GOOD, "quantity": "0.5", "volume": 7})
    assert isinstance(o, OrderRequest) and o.quantity == D("0.5")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"order_id": ""}, "order_id is empty"),
        ({"order_id": "  "}, "order_id is empty"),
        ({"order_id": "x" * 65}, "order_id is 65 characters"),
        ({"strategy_id": "a\nb"}, "strategy_id 'a\\nb' has whitespace"),
        ({"symbol": "btcusdt"}, "symbol 'btcusdt'"),
        ({"symbol": ""}, "symbol ''"),
        ({"side": "buy"}, "side 'buy'"),
        ({"side": ""}, "side ''"),
        ({"price": float("nan")}, "price nan is not finite"),
        ({"price": float("inf")}, "price inf is not finite"),
        ({"price": -1.0}, "price -1.0 must be >= 0"),
        ({"quantity": "abc"}, "quantity 'abc' is not a decimal"),
        ({"quantity": "NaN"}, "quantity 'NaN' is not finite"),
        ({"quantity": "0"}, "quantity '0' must be > 0"),
        ({"quantity": "-0.1"}, "quantity '-0.1' must be > 0"),
        ({"quantity": None, "volume": 0}, "volume 0 must be > 0"),
        ({"quantity": None, "volume": -5}, "volume -5 must be > 0"),
        ({"quantity": None, "volume": 2**31}, "exceeds int32"),
        ({"timestamp": 0}, "timestamp 0 must be a positive integer"),
        ({"timestamp": -1}, "timestamp -1"),
    ],
)
def test_absurd_fields_are_rejected_with_the_field_named(change: dict[str, Any], words: str) -> None:
    r = order_from_fields(**{**GOOD, **change})
    assert isinstance(r, Rejection) and r.code == Code.INVALID_ORDER and not r.retryable
    assert words in r.reason


# ------------------------------------------------------------ single checks


@pytest.mark.parametrize(
    ("max_age", "ts", "expected"),
    [
        (None, T0 - 10**12, None),
        (100, T0, None),
        (100, T0 - 100 * MS, None),  # exactly at the limit passes
        (100, T0 - 100 * MS - 1, Code.STALE_ORDER),
        (100, T0 + 100 * MS, None),
        (100, T0 + 100 * MS + 1, Code.STALE_ORDER),  # from the future: clock skew
    ],
)
def test_check_stale(max_age: int | None, ts: int, expected: int | None) -> None:
    limits = RiskLimits(max_order_age_ms=max_age)
    assert code(risk.check_stale(order(ts=ts), limits, T0)) == expected


@pytest.mark.parametrize(
    ("max_qty", "qty", "expected"),
    [(None, "1000000", None), ("2", "2", None), ("2", "2.00000001", Code.ORDER_SIZE), ("0.5", "0.4", None)],
)
def test_check_size(max_qty: str | None, qty: str, expected: int | None) -> None:
    limits = RiskLimits(max_quantity=None if max_qty is None else D(max_qty))
    assert code(risk.check_size(order(qty=qty), limits)) == expected


@pytest.mark.parametrize(
    ("price", "band", "last", "expected"),
    [
        ("100", None, None, None),  # limit order, no band: no price needed
        ("100", D(50), None, Code.NO_MARKET_PRICE),  # band needs it
        ("0", None, None, Code.NO_MARKET_PRICE),  # market order needs it
        ("0", None, D(0), Code.NO_MARKET_PRICE),  # a zero price is no price
        ("0", None, D(100), None),
    ],
)
def test_check_market_price(price: str, band: Decimal | None, last: Decimal | None, expected: int | None) -> None:
    r = risk.check_market_price(order(price=price), RiskLimits(band_bps=band), last)
    assert code(r) == expected
    assert r is None or r.retryable


@pytest.mark.parametrize(
    ("price", "last", "expected"),
    [
        ("10", None, None),
        ("9.99", None, Code.PRICE_OUT_OF_BOUNDS),
        ("1000", None, None),
        ("1000.01", None, Code.PRICE_OUT_OF_BOUNDS),
        ("0", D("500"), None),  # market order checked at the last price
        ("0", D("2000"), Code.PRICE_OUT_OF_BOUNDS),
        ("0", None, Code.NO_MARKET_PRICE),
    ],
)
def test_check_price_bounds(price: str, last: Decimal | None, expected: int | None) -> None:
    limits = RiskLimits(min_price=D(10), max_price=D(1000))
    assert code(risk.check_price_bounds(order(price=price), limits, last)) == expected


def test_price_bounds_disabled_and_half_open() -> None:
    assert risk.check_price_bounds(order(price="1E+30"), RiskLimits(), None) is None
    assert code(risk.check_price_bounds(order(price="1E+30"), RiskLimits(max_price=D(5)), None)) == 1004
    assert risk.check_price_bounds(order(price="0.0001"), RiskLimits(max_price=D(5)), None) is None


@pytest.mark.parametrize(
    ("price", "side", "last", "expected"),
    [
        ("105", "BUY", D(100), None),  # +500 bps: on the edge passes
        ("105.0000001", "BUY", D(100), Code.PRICE_OUTSIDE_BAND),
        ("95", "SELL", D(100), None),  # -500 bps
        ("94.99", "SELL", D(100), Code.PRICE_OUTSIDE_BAND),
        ("50", "BUY", D(100), Code.PRICE_OUTSIDE_BAND),  # far below is also out of band
        ("0", "BUY", D(100), None),  # market orders are at the market
        ("100", "BUY", None, Code.NO_MARKET_PRICE),
    ],
)
def test_check_price_band(price: str, side: str, last: Decimal | None, expected: int | None) -> None:
    limits = RiskLimits(band_bps=D(500))
    assert code(risk.check_price_band(order(price=price, side=side), limits, last)) == expected


def test_band_message_gives_the_deviation() -> None:
    r = risk.check_price_band(order(price="110"), RiskLimits(band_bps=D(500)), D(100))
    assert r is not None and "1000.00 bps" in r.reason and "band 500" in r.reason


@pytest.mark.parametrize(
    ("price", "qty", "last", "expected"),
    [
        ("100", "10", None, None),  # exactly 1000
        ("100", "10.00000001", None, Code.NOTIONAL),
        ("0", "10", D("100"), None),  # market order at the last price
        ("0", "10", D("100.01"), Code.NOTIONAL),
        ("0", "10", None, Code.NO_MARKET_PRICE),
    ],
)
def test_check_notional(price: str, qty: str, last: Decimal | None, expected: int | None) -> None:
    limits = RiskLimits(max_notional=D(1000))
    assert code(risk.check_notional(order(price=price, qty=qty), limits, last)) == expected


@pytest.mark.parametrize(
    ("side", "qty", "position", "symbol", "expected"),
    [
        ("BUY", "2", D(0), "BTCUSDT", None),  # reaches the limit exactly
        ("BUY", "2.001", D(0), "BTCUSDT", Code.POSITION_LIMIT),
        ("SELL", "2", D(0), "BTCUSDT", None),  # short limit is symmetric
        ("SELL", "2.001", D(0), "BTCUSDT", Code.POSITION_LIMIT),
        ("BUY", "1", D("1.5"), "BTCUSDT", Code.POSITION_LIMIT),
        ("SELL", "4", D("2"), "BTCUSDT", None),  # flip to -2: allowed
        ("SELL", "4.1", D("2"), "BTCUSDT", Code.POSITION_LIMIT),
        ("SELL", "1", D("5"), "BTCUSDT", None),  # over the limit (4 > 2) but reducing: allowed
        ("BUY", "1", D("3"), "BTCUSDT", Code.POSITION_LIMIT),
        ("BUY", "0.5", D(0), "ETHUSDT", None),  # falls back to the default
        ("BUY", "1.5", D(0), "ETHUSDT", Code.POSITION_LIMIT),
    ],
)
def test_check_position(side: str, qty: str, position: Decimal, symbol: str, expected: int | None) -> None:
    limits = RiskLimits(max_position=MappingProxyType({"BTCUSDT": D(2)}), default_max_position=D(1))
    assert code(risk.check_position(order(side=side, qty=qty, symbol=symbol), limits, position)) == expected


def test_unconfigured_symbol_fails_closed() -> None:
    r = risk.check_position(order(symbol="DOGEUSDT"), RiskLimits(), D(0))
    assert r is not None and r.code == Code.POSITION_LIMIT and "no position limit configured for DOGEUSDT" in r.reason


# ------------------------------------------------------------ rate limits


def _send(limits: RiskLimits, times_ms: list[int], strategies: list[str]) -> list[int | None]:
    state, out = RateState(), []
    for t, s in zip(times_ms, strategies, strict=True):
        r, state = risk.check_rate(order(strategy=s), limits, state, T0 + t * MS)
        out.append(code(r))
    return out


@pytest.mark.parametrize(
    ("limits", "times_ms", "strategies", "expected"),
    [
        (RiskLimits(), [0] * 5, ["a"] * 5, [None] * 5),
        (RiskLimits(per_strategy_per_second=2), [0, 1, 2], ["a"] * 3, [None, None, 1006]),
        # the window slides: a send exactly 1 s after the first one is allowed again
        (RiskLimits(per_strategy_per_second=2), [0, 1, 999, 1000], ["a"] * 4, [None, None, 1006, None]),
        (RiskLimits(per_strategy_per_second=2), [0, 1, 2, 3], ["a", "a", "b", "b"], [None] * 4),
        (RiskLimits(global_per_second=3), [0, 1, 2, 3], ["a", "b", "c", "d"], [None, None, None, 1006]),
        # rejected orders do not consume budget: after the window, exactly 2 more go through
        (
            RiskLimits(per_strategy_per_second=2),
            [0, 0, 0, 0, 1000, 1000, 1000],
            ["a"] * 7,
            [None, None, 1006, 1006, None, None, 1006],
        ),
    ],
)
def test_check_rate(limits: RiskLimits, times_ms: list[int], strategies: list[str], expected: list[int | None]) -> None:
    assert _send(limits, times_ms, strategies) == expected


def test_rate_rejection_is_retryable_and_state_forgets_idle_strategies() -> None:
    limits = RiskLimits(per_strategy_per_second=1)
    r, state = risk.check_rate(order(strategy="a"), limits, RateState(), T0)
    assert r is None and set(state.per_strategy) == {"a"}
    r, state = risk.check_rate(order(strategy="a"), limits, state, T0 + 1)
    assert r is not None and r.retryable and "strategy a" in r.reason
    r, state = risk.check_rate(order(strategy="b"), limits, state, T0 + 2000 * MS)
    assert r is None and set(state.per_strategy) == {"b"} and state.global_times == (T0 + 2000 * MS,)


# ------------------------------------------------------------ check_all

FULL = RiskLimits(
    max_order_age_ms=1000,
    max_quantity=D(5),
    max_notional=D(500),
    min_price=D(1),
    max_price=D(10_000),
    band_bps=D(1000),
    global_per_second=100,
    per_strategy_per_second=1,
    max_position=MappingProxyType({"BTCUSDT": D(3)}),
)


@pytest.mark.parametrize(
    ("o", "last", "position", "expected"),
    [
        (order(), D(100), D(0), None),
        # several rules broken at once: the documented order decides which one is reported
        (order(ts=T0 - 2000 * MS, qty="6"), D(100), D(0), Code.STALE_ORDER),
        (order(qty="6", price="0"), None, D(0), Code.ORDER_SIZE),
        (order(price="0", qty="1"), None, D(0), Code.NO_MARKET_PRICE),
        (order(price="20000", qty="1"), D(100), D(0), Code.PRICE_OUT_OF_BOUNDS),
        (order(price="120", qty="5"), D(100), D(0), Code.PRICE_OUTSIDE_BAND),
        (order(price="105", qty="5"), D(100), D(0), Code.NOTIONAL),
        (order(price="100", qty="4"), D(100), D(0), Code.POSITION_LIMIT),
    ],
)
def test_check_all_first_failure_wins(
    o: OrderRequest, last: Decimal | None, position: Decimal, expected: int | None
) -> None:
    r, _ = check_all(o, FULL, now_ns=T0, last_price=last, position=position, rate=RateState())
    assert code(r) == expected


def test_check_all_consumes_rate_only_for_accepted_orders() -> None:
    state = RateState()
    r, state = check_all(order(qty="9"), FULL, now_ns=T0, last_price=D(100), position=D(0), rate=state)
    assert code(r) == Code.ORDER_SIZE and state == RateState()
    r, state = check_all(order(), FULL, now_ns=T0, last_price=D(100), position=D(0), rate=state)
    assert r is None and state.global_times == (T0,)
    r, state = check_all(order(), FULL, now_ns=T0 + 1, last_price=D(100), position=D(0), rate=state)
    assert code(r) == Code.RATE_LIMIT


# ------------------------------------------------------------ the limits file


def test_example_file_loads_exactly() -> None:
    limits = load_limits(EXAMPLE)
    assert limits == RiskLimits(
        max_order_age_ms=5000,
        max_quantity=D(5),
        max_notional=D(250000),
        min_price=D("0.00000001"),
        max_price=D(10_000_000),
        band_bps=D(500),
        global_per_second=50,
        per_strategy_per_second=10,
        default_max_position=D(0),
        max_position=MappingProxyType({"BTCUSDT": D(2), "ETHUSDT": D(40), "SOLUSDT": D(1500)}),
    )


def test_toml_floats_are_read_as_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("[orders]\nmax_notional = 0.1\n[prices]\nband_bps = 12.5\n")
    limits = load_limits(path)
    assert limits.max_notional == D("0.1") and limits.band_bps == D("12.5")


def test_empty_file_disables_all_but_position_limits(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("")
    assert load_limits(path) == RiskLimits()
    assert dict(RiskLimits().max_position) == {}


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[orders]\nmax_age_ms = -1\n", "orders.max_age_ms", "positive integer, got -1"),
        ("[orders]\nmax_age_ms = 1.5\n", "orders.max_age_ms", "positive integer"),
        ("[orders]\nmax_age_ms = true\n", "orders.max_age_ms", "positive integer, got True"),
        ('[orders]\nmax_quantity = "abc"\n', "orders.max_quantity", "'abc' is not a decimal"),
        ("[orders]\nmax_quantity = 0\n", "orders.max_quantity", "must be a finite number > 0"),
        ('[orders]\nmax_notional = "-5"\n', "orders.max_notional", "> 0"),
        ('[orders]\nmax_notional = "inf"\n', "orders.max_notional", "finite"),
        ("[orders]\nmax_notional = [1]\n", "orders.max_notional", "expected a decimal number"),
        ("[orders]\nmax_size = 1\n", "orders.max_size", "unknown key"),
        ('[prices]\nmin = "10"\nmax = "5"\n', "prices.min", "min 10 is above max 5"),
        ("[prices]\nband_bps = -1\n", "prices.band_bps", ">= 0"),
        ("[rate]\nglobal_per_second = 0\n", "rate.global_per_second", "positive integer, got 0"),
        ("[risk]\nx = 1\n", "risk", "unknown table"),
        ("orders = 5\n", "orders", "expected a table [orders]"),
        ("[positions]\nmax = 3\n", "positions.max", "expected a table"),
        ("[positions.max]\nbtcusdt = 1\n", "positions.max.btcusdt", "upper-case"),
        ("[positions.max]\nBTCUSDT = -1\n", "positions.max.BTCUSDT", ">= 0"),
        ("[orders\n", "risk_limits", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key_and_the_file(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_limits(path)
    assert info.value.key == key
    assert words in str(info.value) and str(path) in str(info.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml does not exist"):
        load_limits(tmp_path / "nope.toml")
