"""What the gateway passes around: an order request, a fill, a rejection, and their codes.

Money is ``Decimal`` end to end, never ``float``.  The one place a float enters is the protobuf
``Order.price`` (a ``double`` on the wire, see WIRE.md): ``order_from_fields`` converts it with
``Decimal(repr(x))``.  ``repr`` of a float is the shortest string that round-trips to the same
double, so a strategy that wrote ``64321.1`` gets ``Decimal("64321.1")``, not
``Decimal(64321.1)`` = ``64321.09999999999854480847716331481933593750``.

Quantities come from the exact decimal string field the codec adds to ``Order`` when the
strategy set it, else from the legacy ``int32 volume`` (which cannot express 0.001 BTC).

A price of 0 means a MARKET order (no limit); any positive price is a limit.
Times are integers in nanoseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import dataclasses
import math
import re
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import Literal

Side = Literal["BUY", "SELL"]
SIDES: tuple[Side, ...] = ("BUY", "SELL")

# Protobuf int32 range: a volume outside it cannot have come off the wire.
_INT32_MAX = 2**31 - 1
# Symbols as Binance sends them: upper-case letters and digits.
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,32}$")
_MAX_ID_LEN = 64


class Code(IntEnum):
    """Stable rejection codes carried in ``Trade.error_code`` (the table lives in ``risk``)."""

    RISK_GENERIC = 1001
    POSITION_LIMIT = 1002
    STALE_ORDER = 1003
    PRICE_OUT_OF_BOUNDS = 1004
    PRICE_OUTSIDE_BAND = 1005
    RATE_LIMIT = 1006
    ORDER_SIZE = 1007
    NOTIONAL = 1008
    INVALID_ORDER = 1009
    NO_MARKET_PRICE = 1010
    JOURNAL_UNAVAILABLE = 1011
    EXCHANGE_FAILED = 2001
    NOT_FILLED = 2002
    EXCHANGE_REJECTED = 2003
    EXCHANGE_AUTH = 2004
    EXCHANGE_CLOCK = 2005


@dataclasses.dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated order from a strategy.

    ``price`` 0 means MARKET; ``quantity`` > 0 in the base asset; ``timestamp_ns`` is when the
    strategy made it (ns since epoch, UTC).  ``order_id`` is the strategy's id and doubles as the
    exchange's client order id, which makes a resubmission recognisable.
    """

    order_id: str
    strategy_id: str
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    timestamp_ns: int

    @property
    def is_market(self) -> bool:
        return self.price == 0

    @property
    def signed_quantity(self) -> Decimal:
        """Quantity with the position's sign convention: BUY positive, SELL negative."""
        return self.quantity if self.side == "BUY" else -self.quantity


@dataclasses.dataclass(frozen=True, slots=True)
class Fill:
    """One execution of an order.

    ``price``/``quantity`` exact as the venue reported them; ``commission`` in the quote asset
    (the adapter converts when it can, see ``commission_asset``); ``time_ns`` ns since epoch, UTC.
    ``trade_id`` is unique per venue, so storing fills keyed on it is idempotent.
    """

    trade_id: str
    order_id: str
    strategy_id: str
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    commission: Decimal
    time_ns: int
    commission_asset: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """Why an order did not go (or did not fill): a result, not an exception.

    ``retryable`` tells the strategy that resubmitting the same order later may succeed
    (rate limit, exchange 429/5xx, timeout); it maps to ``Trade.is_retryable``.
    """

    code: int
    reason: str
    retryable: bool = False


def _invalid(reason: str) -> Rejection:
    return Rejection(Code.INVALID_ORDER, reason)


def _check_id(name: str, value: str) -> Rejection | None:
    if not value or not value.strip():
        return _invalid(f"{name} is empty")
    if len(value) > _MAX_ID_LEN:
        return _invalid(f"{name} is {len(value)} characters long (at most {_MAX_ID_LEN})")
    if not value.isprintable() or value != value.strip():
        return _invalid(f"{name} {value!r} has whitespace or control characters")
    return None


def price_from_double(price: float) -> Decimal:
    """The decimal a strategy meant by a protobuf double: ``Decimal(repr(price))`` (see module doc)."""
    return Decimal(repr(float(price)))


def _quantity(volume: int, quantity: str | None) -> Decimal | Rejection:
    if quantity:  # the exact field wins; old clients leave it empty (proto3 default "")
        try:
            qty = Decimal(quantity)
        except InvalidOperation:
            return _invalid(f"quantity {quantity!r} is not a decimal number")
        if not qty.is_finite():
            return _invalid(f"quantity {quantity!r} is not finite")
        if qty <= 0:
            return _invalid(f"quantity {quantity!r} must be > 0")
        return qty
    if isinstance(volume, bool) or not isinstance(volume, int):
        return _invalid(f"volume {volume!r} is not an integer")
    if volume <= 0:
        return _invalid(f"volume {volume} must be > 0 (or set the decimal quantity field)")
    if volume > _INT32_MAX:
        return _invalid(f"volume {volume} exceeds int32")
    return Decimal(volume)


def order_from_fields(
    *,
    order_id: str,
    strategy_id: str,
    symbol: str,
    side: str,
    price: float,
    volume: int,
    timestamp: int,
    quantity: str | None = None,
) -> OrderRequest | Rejection:
    """Validate the raw fields of a decoded protobuf ``Order``; pure.

    Returns an ``OrderRequest``, or ``Rejection(1009, ...)`` whose reason names the bad field and
    value.  ``quantity`` is the exact decimal string field (preferred when non-empty); otherwise
    the int32 ``volume`` is used.  ``price`` 0 is a MARKET order; negative, NaN or infinite prices
    are rejected.  ``timestamp`` is ns since epoch and must be positive.
    """
    for name, value in (("order_id", order_id), ("strategy_id", strategy_id)):
        bad = _check_id(name, value)
        if bad is not None:
            return bad
    if not _SYMBOL_RE.match(symbol or ""):
        return _invalid(f"symbol {symbol!r} is not an upper-case exchange symbol like 'BTCUSDT'")
    if side not in SIDES:
        return _invalid(f"side {side!r} must be 'BUY' or 'SELL'")
    if isinstance(price, bool) or not isinstance(price, int | float):
        return _invalid(f"price {price!r} is not a number")
    if not math.isfinite(price):
        return _invalid(f"price {price!r} is not finite")
    if price < 0:
        return _invalid(f"price {price!r} must be >= 0 (0 means a market order)")
    qty = _quantity(volume, quantity)
    if isinstance(qty, Rejection):
        return qty
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp <= 0:
        return _invalid(f"timestamp {timestamp!r} must be a positive integer (ns since epoch)")
    return OrderRequest(
        order_id=order_id,
        strategy_id=strategy_id,
        symbol=symbol,
        side="BUY" if side == "BUY" else "SELL",
        price=price_from_double(price),
        quantity=qty,
        timestamp_ns=timestamp,
    )
