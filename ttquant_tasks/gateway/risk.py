"""Pre-trade risk checks: pure functions ``check_xxx(order, limits, ...) -> Rejection | None``.

A rejection is a result, not an exception.  Limits come from a TOML file (``load_limits``; see
``docs/risk.example.toml``); a bad file, key or value raises ``ConfigError`` naming the key and file.

Rejection codes (``Trade.error_code``; 1001 and 2001 are the codes TTQuant clients already know):

    ====  ========================  ==========  ==============================================
    code  meaning                   retryable   raised by
    ====  ========================  ==========  ==============================================
    1001  risk check failed         no          generic; reserved for failures with no finer code
    1002  position limit            no          check_position
    1003  stale order               no          check_stale (too old, or from the future)
    1004  price out of bounds       no          check_price_bounds
    1005  price outside band        no          check_price_band
    1006  rate limit                yes         check_rate (global or per strategy)
    1007  order too large           no          check_size
    1008  notional too large        no          check_notional
    1009  invalid order fields      no          orders.order_from_fields
    1010  no market price           yes         any check that needs the last price
    1011  journal unavailable       yes         gateway: its write-ahead journal cannot be written
    2001  exchange submission       varies      exchange adapters (429/418/5xx/timeout: yes)
    2002  not filled (IOC)          no          paper/binance: limit did not cross the market
    2003  exchange rejected order   no          binance: -2010, -1013, -11xx
    2004  exchange auth failed      no          binance: -1022, -2014, -2015
    2005  exchange clock skew       yes         binance: -1021 (timestamp outside recvWindow)
    ====  ========================  ==========  ==============================================

``check_all`` runs the checks in this order, cheapest and most fundamental first, and returns the
first rejection: stale, size, market price, price bounds, price band, notional, position, rate.
Rate comes last so that only orders which pass every other check consume the rate budget.

Units: prices in the quote asset, quantities in the base asset, notional = price x quantity in
the quote asset; MARKET orders (price 0) are valued at the last market price.  Band in basis
points of the last price; ages in milliseconds; times in ns since epoch, UTC.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError
from .orders import Code, OrderRequest, Rejection

_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000
_BPS = Decimal(10_000)


@dataclasses.dataclass(frozen=True)
class RiskLimits:
    """Pre-trade limits.  ``None`` disables a rule (except position limits: see below).

    ``max_position`` maps symbol -> largest absolute position (base asset) one strategy may
    hold; symbols not listed use ``default_max_position``; with neither, orders in that symbol
    are rejected (fail closed: an unconfigured symbol is a typo more often than a wish).
    """

    max_order_age_ms: int | None = None
    max_quantity: Decimal | None = None
    max_notional: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    band_bps: Decimal | None = None
    global_per_second: int | None = None
    per_strategy_per_second: int | None = None
    default_max_position: Decimal | None = None
    max_position: Mapping[str, Decimal] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def position_limit(self, symbol: str) -> Decimal | None:
        return self.max_position.get(symbol, self.default_max_position)


# ---------------------------------------------------------------- loading


_SCHEMA: dict[str, dict[str, str]] = {
    # table -> key -> kind: "int" positive integer, "dec" decimal > 0, "dec0" decimal >= 0,
    # "table" symbol -> decimal >= 0
    "orders": {"max_age_ms": "int", "max_quantity": "dec", "max_notional": "dec"},
    "prices": {"min": "dec0", "max": "dec", "band_bps": "dec0"},
    "rate": {"global_per_second": "int", "per_strategy_per_second": "int"},
    "positions": {"default_max": "dec0", "max": "table"},
}


def _decimal(value: Any, key: str, where: str, *, allow_zero: bool) -> Decimal:
    # TOML floats arrive as Decimal (parse_float=Decimal), strings are parsed exactly, ints as is.
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise ConfigError(key, f"in {where}: expected a decimal number, got {value!r}")
    try:
        dec = Decimal(value)
    except ArithmeticError:
        raise ConfigError(key, f"in {where}: {value!r} is not a decimal number") from None
    if not dec.is_finite() or dec < 0 or (dec == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(key, f"in {where}: {value!r} must be a finite number {bound}")
    return dec


def _positive_int(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(key, f"in {where}: expected a positive integer, got {value!r}")
    return value


def _table(doc: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(name, f"in {where}: expected a table [{name}], got {table!r}")
    unknown = sorted(set(table) - set(_SCHEMA[name]))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", f"in {where}: unknown key (known: {sorted(_SCHEMA[name])})")
    return table


def limits_from_mapping(doc: Mapping[str, Any], where: str = "<mapping>") -> RiskLimits:
    """Build ``RiskLimits`` from a parsed TOML document; ``where`` names the source in errors."""
    unknown = sorted(set(doc) - set(_SCHEMA))
    if unknown:
        raise ConfigError(unknown[0], f"in {where}: unknown table (known: {sorted(_SCHEMA)})")
    values: dict[str, Any] = {}
    fields = {
        ("orders", "max_age_ms"): "max_order_age_ms",
        ("orders", "max_quantity"): "max_quantity",
        ("orders", "max_notional"): "max_notional",
        ("prices", "min"): "min_price",
        ("prices", "max"): "max_price",
        ("prices", "band_bps"): "band_bps",
        ("rate", "global_per_second"): "global_per_second",
        ("rate", "per_strategy_per_second"): "per_strategy_per_second",
        ("positions", "default_max"): "default_max_position",
    }
    tables = {name: _table(doc, name, where) for name in _SCHEMA}
    for (tname, key), attr in fields.items():
        if key not in tables[tname]:
            continue
        raw, full = tables[tname][key], f"{tname}.{key}"
        kind = _SCHEMA[tname][key]
        if kind == "int":
            values[attr] = _positive_int(raw, full, where)
        else:
            values[attr] = _decimal(raw, full, where, allow_zero=kind == "dec0")
    per_symbol = tables["positions"].get("max", {})
    if not isinstance(per_symbol, Mapping):
        raise ConfigError("positions.max", f"in {where}: expected a table [positions.max], got {per_symbol!r}")
    limits: dict[str, Decimal] = {}
    for symbol, raw in per_symbol.items():
        key = f"positions.max.{symbol}"
        if symbol != symbol.upper() or not symbol.isalnum():
            raise ConfigError(key, f"in {where}: symbol must be upper-case letters/digits like BTCUSDT")
        limits[symbol] = _decimal(raw, key, where, allow_zero=True)
    values["max_position"] = MappingProxyType(limits)
    lo, hi = values.get("min_price"), values.get("max_price")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError("prices.min", f"in {where}: min {lo} is above max {hi}")
    return RiskLimits(**values)


def load_limits(path: str | Path) -> RiskLimits:
    """Read ``RiskLimits`` from a TOML file (decimals exact: TOML floats parse as ``Decimal``)."""
    where = str(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh, parse_float=Decimal)
    except FileNotFoundError:
        raise ConfigError("risk_limits", f"file {where} does not exist") from None
    except OSError as exc:
        raise ConfigError("risk_limits", f"cannot read {where}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("risk_limits", f"{where} is not valid TOML: {exc}") from exc
    return limits_from_mapping(doc, where)


# ---------------------------------------------------------------- checks


def _no_price(order: OrderRequest, why: str) -> Rejection:
    return Rejection(Code.NO_MARKET_PRICE, f"no market price for {order.symbol} ({why})", retryable=True)


def effective_price(order: OrderRequest, last_price: Decimal | None) -> Decimal | None:
    """The limit price, or the last market price for a MARKET order (None when unknown)."""
    return last_price if order.is_market else order.price


def check_stale(order: OrderRequest, limits: RiskLimits, now_ns: int) -> Rejection | None:
    """1003 when the order is older than ``max_order_age_ms``, or that far in the future (clock skew)."""
    if limits.max_order_age_ms is None:
        return None
    age_ns = now_ns - order.timestamp_ns
    max_ns = limits.max_order_age_ms * _NS_PER_MS
    if age_ns > max_ns:
        return Rejection(Code.STALE_ORDER, f"order is {age_ns / _NS_PER_MS:.3f} ms old (max {limits.max_order_age_ms})")
    if -age_ns > max_ns:
        return Rejection(
            Code.STALE_ORDER,
            f"order timestamp is {-age_ns / _NS_PER_MS:.3f} ms in the future (max {limits.max_order_age_ms})",
        )
    return None


def check_size(order: OrderRequest, limits: RiskLimits) -> Rejection | None:
    """1007 when the quantity exceeds ``max_quantity``."""
    if limits.max_quantity is not None and order.quantity > limits.max_quantity:
        return Rejection(Code.ORDER_SIZE, f"quantity {order.quantity} exceeds max {limits.max_quantity}")
    return None


def check_market_price(order: OrderRequest, limits: RiskLimits, last_price: Decimal | None) -> Rejection | None:
    """1010 when a price is needed (MARKET order, or a band is configured) but none is known."""
    if last_price is not None and last_price > 0:
        return None
    if order.is_market:
        return _no_price(order, "a market order is valued at the last price")
    if limits.band_bps is not None:
        return _no_price(order, "the price band needs it")
    return None


def check_price_bounds(order: OrderRequest, limits: RiskLimits, last_price: Decimal | None) -> Rejection | None:
    """1004 when the effective price lies outside ``[min_price, max_price]`` (inclusive)."""
    if limits.min_price is None and limits.max_price is None:
        return None
    price = effective_price(order, last_price)
    if price is None:
        return _no_price(order, "a market order is checked against the price bounds")
    if limits.min_price is not None and price < limits.min_price:
        return Rejection(Code.PRICE_OUT_OF_BOUNDS, f"price {price} is below min {limits.min_price}")
    if limits.max_price is not None and price > limits.max_price:
        return Rejection(Code.PRICE_OUT_OF_BOUNDS, f"price {price} is above max {limits.max_price}")
    return None


def check_price_band(order: OrderRequest, limits: RiskLimits, last_price: Decimal | None) -> Rejection | None:
    """1005 when a limit price is more than ``band_bps`` away from the last price (edge allowed).

    MARKET orders pass: they execute at the market by definition.
    """
    if limits.band_bps is None or order.is_market:
        return None
    if last_price is None or last_price <= 0:
        return _no_price(order, "the price band needs it")
    # Compare |p - last| * 10000 <= band * last: exact, no division.
    if abs(order.price - last_price) * _BPS > limits.band_bps * last_price:
        dev = (order.price - last_price) * _BPS / last_price
        return Rejection(
            Code.PRICE_OUTSIDE_BAND,
            f"price {order.price} is {dev:.2f} bps from last {last_price} (band {limits.band_bps} bps)",
        )
    return None


def check_notional(order: OrderRequest, limits: RiskLimits, last_price: Decimal | None) -> Rejection | None:
    """1008 when price x quantity exceeds ``max_notional`` (MARKET orders at the last price)."""
    if limits.max_notional is None:
        return None
    price = effective_price(order, last_price)
    if price is None:
        return _no_price(order, "a market order's notional needs it")
    notional = price * order.quantity
    if notional > limits.max_notional:
        return Rejection(Code.NOTIONAL, f"notional {notional} exceeds max {limits.max_notional}")
    return None


def check_position(order: OrderRequest, limits: RiskLimits, position: Decimal) -> Rejection | None:
    """1002 when the position after a full fill would exceed the symbol's limit in absolute value.

    ``position`` is the strategy's current signed position in the symbol (base asset).  An order
    that shrinks the absolute position always passes, so a strategy over its limit (the limit
    was lowered) can still get out.
    """
    limit = limits.position_limit(order.symbol)
    if limit is None:
        return Rejection(Code.POSITION_LIMIT, f"no position limit configured for {order.symbol}")
    after = position + order.signed_quantity
    if abs(after) <= limit or abs(after) < abs(position):
        return None
    return Rejection(
        Code.POSITION_LIMIT,
        f"position {position} {order.side} {order.quantity} -> {after} exceeds limit {limit} for {order.symbol}",
    )


@dataclasses.dataclass(frozen=True)
class RateState:
    """Send times (ns) inside the last second: globally and per strategy.  Immutable; pass it on.

    Each tuple holds at most the configured rate, so the state stays small; strategies with no
    order in the last second are dropped.
    """

    global_times: tuple[int, ...] = ()
    per_strategy: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=lambda: MappingProxyType({}))


def _recent(times: tuple[int, ...], now_ns: int) -> tuple[int, ...]:
    return tuple(t for t in times if now_ns - t < _NS_PER_S)


def check_rate(
    order: OrderRequest, limits: RiskLimits, state: RateState, now_ns: int
) -> tuple[Rejection | None, RateState]:
    """1006 (retryable) when the sliding one-second window is full; else record the send.

    Returns the rejection (or None) and the new state; on rejection the state only forgets
    expired entries, so a rejected order does not consume budget.  A window holds orders sent at
    times t with ``now - t < 1 s``.
    """
    glob = _recent(state.global_times, now_ns)
    mine = _recent(state.per_strategy.get(order.strategy_id, ()), now_ns)
    others = {k: r for k, v in state.per_strategy.items() if k != order.strategy_id and (r := _recent(v, now_ns))}
    rejection: Rejection | None = None
    if limits.global_per_second is not None and len(glob) >= limits.global_per_second:
        rejection = Rejection(
            Code.RATE_LIMIT, f"global rate limit {limits.global_per_second} orders/s reached", retryable=True
        )
    elif limits.per_strategy_per_second is not None and len(mine) >= limits.per_strategy_per_second:
        rejection = Rejection(
            Code.RATE_LIMIT,
            f"rate limit {limits.per_strategy_per_second} orders/s reached for strategy {order.strategy_id}",
            retryable=True,
        )
    else:
        glob, mine = (*glob, now_ns), (*mine, now_ns)
    if mine:
        others[order.strategy_id] = mine
    return rejection, RateState(glob, MappingProxyType(others))


def check_all(
    order: OrderRequest,
    limits: RiskLimits,
    *,
    now_ns: int,
    last_price: Decimal | None,
    position: Decimal,
    rate: RateState,
) -> tuple[Rejection | None, RateState]:
    """Run every check in the documented order; the first rejection wins.

    Returns ``(None, new_rate_state)`` when the order may go to the exchange (its send is then
    recorded in the rate state) or ``(rejection, rate_state)`` otherwise.
    """
    rejection = (
        check_stale(order, limits, now_ns)
        or check_size(order, limits)
        or check_market_price(order, limits, last_price)
        or check_price_bounds(order, limits, last_price)
        or check_price_band(order, limits, last_price)
        or check_notional(order, limits, last_price)
        or check_position(order, limits, position)
    )
    if rejection is not None:
        return rejection, rate
    return check_rate(order, limits, rate, now_ns)
