"""Protobuf encode/decode of the TTQuant wire messages, and ZMQ topics.  Pure: no sockets.

The messages are those of WIRE.md (``ttquant.proto``); fields 1..13 are what existing clients speak.
Fresh optional fields carry what the old ones cannot: exact decimal strings (``price_str``,
``volume_str``, ``quantity``, ``filled_quantity``, ``filled_price_str``) and the trade id.  Old
clients skip them; new readers prefer them (see :func:`order_quantity`, :func:`tick_from_market_data`).
Times are int64 nanoseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import functools
from decimal import Decimal, InvalidOperation

from google.protobuf.message import DecodeError, Message

from ..errors import PayloadError
from ..models import Tick
from .ttquant_pb2 import MarketData, Order, Trade

__all__ = [
    "MarketData", "Order", "Trade", "md_topic", "trade_topic", "encode_market_data", "MarketDataEncoder",
    "decode_market_data",
    "tick_from_market_data", "encode_order", "decode_order", "order_quantity", "encode_trade",
    "decode_trade", "trade_quantity",
]

_INT32_MAX = 2**31 - 1


@functools.lru_cache(maxsize=4096)  # per tick on the feed's hot path; a few symbols in practice
def _topic(kind: str, symbol: str, exchange: str) -> bytes:
    if not symbol or not exchange or "." in symbol or "." in exchange:
        raise ValueError(f"topic needs a symbol and an exchange without dots, got {symbol!r}, {exchange!r}")
    return f"{kind}.{symbol}.{exchange}".encode()


def md_topic(symbol: str, exchange: str) -> bytes:
    """Market-data topic, ``md.{SYMBOL}.{exchange}`` (e.g. ``b"md.BTCUSDT.binance"``)."""
    return _topic("md", symbol, exchange)


def trade_topic(symbol: str, exchange: str) -> bytes:
    """Trade (fill/rejection) topic, ``trade.{SYMBOL}.{exchange}``."""
    return _topic("trade", symbol, exchange)


def _parse_into(msg: Message, data: bytes) -> None:
    try:
        msg.ParseFromString(bytes(data))
    except (DecodeError, ValueError, TypeError) as exc:
        name = type(msg).__name__
        raise PayloadError(f"{len(data)} bytes are not a valid ttquant.{name} message: {exc}") from exc


def _legacy_int(quantity: str) -> int:
    """int32 view of a decimal quantity for old clients: the value if whole and in range, else 0.

    0 rather than a truncation: an old client must not act on a silently rounded quantity.
    """
    try:
        d = Decimal(quantity)
    except InvalidOperation as exc:
        raise ValueError(f"quantity {quantity!r} is not a decimal") from exc
    if d.is_finite() and d == d.to_integral_value() and abs(d) <= _INT32_MAX:
        return int(d)
    return 0


class MarketDataEncoder:
    """``MarketData`` bytes of ticks from one reused message (the feed's publisher keeps one).

    Every field is assigned on every call (proto3: a zero value is simply not serialized), so nothing
    of the previous tick can leak into the next.  Building a fresh ``MarketData`` per tick was a third
    of the encode's cost (bench, docs/benchmarks.md).  Not thread-safe: one encoder per thread.
    """

    __slots__ = ("_msg",)

    def __init__(self) -> None:
        self._msg = MarketData()

    def __call__(self, tick: Tick) -> bytes:
        msg = self._msg
        msg.symbol = tick.symbol
        msg.last_price = float(tick.price)
        msg.volume = float(tick.qty)
        msg.exchange_time = tick.exchange_time
        msg.local_time = tick.local_time
        msg.exchange = tick.exchange
        msg.price_str = tick.price
        msg.volume_str = tick.qty
        msg.trade_id = tick.trade_id
        out: bytes = msg.SerializeToString()
        return out


def encode_market_data(tick: Tick) -> bytes:
    """``MarketData`` bytes of one tick: float views for old clients plus exact strings and the id."""
    return MarketDataEncoder()(tick)


def decode_market_data(data: bytes) -> MarketData:
    """Parse ``MarketData`` bytes; :class:`PayloadError` when they do not parse."""
    msg = MarketData()
    _parse_into(msg, data)
    return msg


def tick_from_market_data(msg: MarketData) -> Tick:
    """A :class:`Tick` from a message: exact strings when present, else the float's shortest repr."""
    return Tick(
        exchange=msg.exchange,
        symbol=msg.symbol,
        trade_id=msg.trade_id,
        price=msg.price_str or repr(msg.last_price),
        qty=msg.volume_str or repr(msg.volume),
        exchange_time=msg.exchange_time,
        local_time=msg.local_time,
    )


def encode_order(*, order_id: str, strategy_id: str, symbol: str, price: float, quantity: str,
                 side: str, timestamp: int) -> bytes:
    """``Order`` bytes.  ``quantity`` is an exact decimal string; ``volume`` carries its int32 view."""
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side must be BUY or SELL, got {side!r}")
    out: bytes = Order(
        order_id=order_id, strategy_id=strategy_id, symbol=symbol, price=price,
        volume=_legacy_int(quantity), side=side, timestamp=timestamp, quantity=quantity,
    ).SerializeToString()
    return out


def decode_order(data: bytes) -> Order:
    """Parse ``Order`` bytes; :class:`PayloadError` when they do not parse."""
    msg = Order()
    _parse_into(msg, data)
    return msg


def order_quantity(msg: Order) -> str:
    """The order's quantity as a decimal string: ``quantity`` when present, else the int32 ``volume``."""
    return msg.quantity or str(msg.volume)


def encode_trade(*, trade_id: str, order_id: str, strategy_id: str, symbol: str, side: str,
                 filled_price: str, filled_quantity: str, trade_time: int, status: str,
                 error_code: int = 0, error_message: str = "", is_retryable: bool = False,
                 commission: float = 0.0) -> bytes:
    """``Trade`` bytes (fill or rejection).  Price and quantity are exact decimal strings."""
    if status not in ("FILLED", "REJECTED"):
        raise ValueError(f"status must be FILLED or REJECTED, got {status!r}")
    out: bytes = Trade(
        trade_id=trade_id, order_id=order_id, strategy_id=strategy_id, symbol=symbol, side=side,
        filled_price=float(filled_price), filled_volume=_legacy_int(filled_quantity),
        trade_time=trade_time, status=status, error_code=error_code, error_message=error_message,
        is_retryable=is_retryable, commission=commission, filled_quantity=filled_quantity,
        filled_price_str=filled_price,
    ).SerializeToString()
    return out


def decode_trade(data: bytes) -> Trade:
    """Parse ``Trade`` bytes; :class:`PayloadError` when they do not parse."""
    msg = Trade()
    _parse_into(msg, data)
    return msg


def trade_quantity(msg: Trade) -> str:
    """Filled quantity as a decimal string: ``filled_quantity`` when present, else ``filled_volume``."""
    return msg.filled_quantity or str(msg.filled_volume)
