"""Binance spot market-stream frames -> plain data.  Pure: no sockets, no clocks.

``parse_frame`` accepts both shapes Binance sends:

* combined stream (``/stream?streams=...``), routed by the stream-name suffix::

    {"stream":"btcusdt@trade","data":{"e":"trade","E":1732540000125,"s":"BTCUSDT","t":4123456789,
     "p":"64321.12000000","q":"0.00120000","T":1732540000123,"m":true,"M":true}}

* raw single stream (``/ws/<name>``), routed by the event type ``e`` (bookTicker has none and is
  recognised by its keys).

Prices and quantities stay the exchange's exact decimal strings.  Exchange times arrive in
milliseconds (UTC) and leave as nanoseconds.  Every failure is a :class:`FrameError` whose ``kind``
callers count: ``malformed_json``, ``unknown_stream``, ``unknown_event``, ``missing_field``, ``bad_value``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

from ..errors import PayloadError
from ..models import Tick

EXCHANGE: Final = "binance"
MS: Final = 1_000_000  # ns per ms
_MAX_MS: Final = (2**63 - 1) // MS  # exchange_time in ns must fit a BIGINT

FrameErrorKind = Literal["malformed_json", "unknown_stream", "unknown_event", "missing_field", "bad_value"]
FRAME_ERROR_KINDS: Final[tuple[FrameErrorKind, ...]] = (
    "malformed_json",
    "unknown_stream",
    "unknown_event",
    "missing_field",
    "bad_value",
)

# Binance always sends plain positive decimals ("64321.12000000"); anything else (exponents, NaN,
# signs) is refused rather than normalised, so the stored string is exactly what was sent.
_DECIMAL = re.compile(r"\d{1,40}(\.\d{1,40})?")
_SYMBOL = re.compile(r"[A-Z0-9_\-]{1,64}")


class FrameError(PayloadError):
    """A frame that cannot be used; ``kind`` is one of :data:`FRAME_ERROR_KINDS`."""

    def __init__(self, kind: FrameErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: FrameErrorKind = kind


@dataclasses.dataclass(frozen=True, slots=True)
class AggTrade:
    """An aggregate trade (``@aggTrade``): trades ``first_id..last_id`` at one price.  Not persisted."""

    symbol: str
    agg_id: int
    price: str
    qty: str
    first_id: int
    last_id: int
    exchange_time: int  # ns, UTC
    local_time: int  # ns, UTC
    buyer_maker: bool


@dataclasses.dataclass(frozen=True, slots=True)
class BookTicker:
    """Best bid/ask (``@bookTicker``); ``update_id`` orders updates.  Not persisted."""

    symbol: str
    update_id: int
    bid_price: str
    bid_qty: str
    ask_price: str
    ask_qty: str
    local_time: int  # ns, UTC


@dataclasses.dataclass(frozen=True, slots=True)
class ServerShutdown:
    """Binance is about to close this connection: open a new one at once."""

    event_time: int  # ns, UTC (0 when absent)
    local_time: int


ParsedFrame = Tick | AggTrade | BookTicker | ServerShutdown


def _field(data: Mapping[str, Any], key: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise FrameError("missing_field", f"field {key!r} missing") from None


def _int(data: Mapping[str, Any], key: str, limit: int = 2**63 - 1) -> int:
    v = _field(data, key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
        raise FrameError("bad_value", f"field {key!r} must be an integer in [0, {limit}], got {v!r:.40}")
    return v


def _dec(data: Mapping[str, Any], key: str) -> str:
    v = _field(data, key)
    if not isinstance(v, str) or _DECIMAL.fullmatch(v) is None:
        raise FrameError("bad_value", f"field {key!r} must be a plain decimal string, got {v!r:.40}")
    return v


def _bool(data: Mapping[str, Any], key: str) -> bool:
    v = _field(data, key)
    if not isinstance(v, bool):
        raise FrameError("bad_value", f"field {key!r} must be true or false, got {v!r:.40}")
    return v


def _symbol(data: Mapping[str, Any], stream_symbol: str | None) -> str:
    v = _field(data, "s")
    if not isinstance(v, str) or _SYMBOL.fullmatch(v) is None:
        raise FrameError("bad_value", f"field 's' must be an upper-case symbol, got {v!r:.40}")
    if stream_symbol is not None and v.lower() != stream_symbol:
        raise FrameError("bad_value", f"symbol {v!r} does not match stream {stream_symbol!r}")
    return v


def _event(data: Mapping[str, Any], expected: str) -> None:
    e = _field(data, "e")
    if e != expected:
        raise FrameError("bad_value", f"event type {e!r:.40} on a {expected!r} stream")


def parse_trade(data: Mapping[str, Any], local_time_ns: int, stream_symbol: str | None = None) -> Tick:
    """A ``@trade`` payload as a :class:`Tick`.

    Sample payload::

        {"e":"trade","E":1732540000125,"s":"BTCUSDT","t":4123456789,"p":"64321.12000000",
         "q":"0.00120000","T":1732540000123,"m":true,"M":true}

    ``exchange_time`` = ``T`` (trade time, ms) * 1e6; ``buyer_maker`` = ``m``; ``M`` is ignored.
    """
    _event(data, "trade")
    return Tick(
        exchange=EXCHANGE,
        symbol=_symbol(data, stream_symbol),
        trade_id=_int(data, "t"),
        price=_dec(data, "p"),
        qty=_dec(data, "q"),
        exchange_time=_int(data, "T", _MAX_MS) * MS,
        local_time=local_time_ns,
        buyer_maker=_bool(data, "m"),
    )


def parse_agg_trade(data: Mapping[str, Any], local_time_ns: int, stream_symbol: str | None = None) -> AggTrade:
    """A ``@aggTrade`` payload.

    Sample payload::

        {"e":"aggTrade","E":1732540000125,"s":"BTCUSDT","a":3312345678,"p":"64321.12000000",
         "q":"0.05000000","f":4123456780,"l":4123456789,"T":1732540000123,"m":false,"M":true}
    """
    _event(data, "aggTrade")
    first, last = _int(data, "f"), _int(data, "l")
    if last < first:
        raise FrameError("bad_value", f"aggTrade last id {last} < first id {first}")
    return AggTrade(
        symbol=_symbol(data, stream_symbol),
        agg_id=_int(data, "a"),
        price=_dec(data, "p"),
        qty=_dec(data, "q"),
        first_id=first,
        last_id=last,
        exchange_time=_int(data, "T", _MAX_MS) * MS,
        local_time=local_time_ns,
        buyer_maker=_bool(data, "m"),
    )


def parse_book_ticker(data: Mapping[str, Any], local_time_ns: int, stream_symbol: str | None = None) -> BookTicker:
    """A ``@bookTicker`` payload (it carries no event type or time).

    Sample payload::

        {"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}
    """
    return BookTicker(
        symbol=_symbol(data, stream_symbol),
        update_id=_int(data, "u"),
        bid_price=_dec(data, "b"),
        bid_qty=_dec(data, "B"),
        ask_price=_dec(data, "a"),
        ask_qty=_dec(data, "A"),
        local_time=local_time_ns,
    )


def parse_server_shutdown(data: Mapping[str, Any], local_time_ns: int) -> ServerShutdown:
    """A ``serverShutdown`` event.  Sample: ``{"e":"serverShutdown","E":1770123456789}``."""
    e_time = data.get("E", 0)
    if isinstance(e_time, bool) or not isinstance(e_time, int) or not 0 <= e_time <= _MAX_MS:
        raise FrameError("bad_value", f"field 'E' must be a time in ms, got {e_time!r:.40}")
    return ServerShutdown(event_time=e_time * MS, local_time=local_time_ns)


_Handler = Callable[[Mapping[str, Any], int, "str | None"], ParsedFrame]

# stream-name suffix (after '@') -> handler; also the event types of raw /ws/ payloads.
STREAM_HANDLERS: Final[Mapping[str, _Handler]] = {
    "trade": parse_trade,
    "aggTrade": parse_agg_trade,
    "bookTicker": parse_book_ticker,
}
_BOOK_TICKER_KEYS: Final = frozenset("usbBaA")


def _decode(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    # RecursionError: deeply nested input; UnicodeDecodeError is a ValueError
    except (ValueError, RecursionError, TypeError) as exc:
        raise FrameError("malformed_json", f"not JSON: {str(exc)[:80]}") from None


def _is_shutdown(data: Mapping[str, Any]) -> bool:
    return data.get("e") == "serverShutdown"


def parse_frame(raw: str | bytes, local_time_ns: int) -> ParsedFrame:
    """Parse one websocket text frame received at ``local_time_ns`` (ns since epoch, UTC).

    Sample combined-stream frame::

        {"stream":"btcusdt@trade","data":{"e":"trade","E":1732540000125,"s":"BTCUSDT","t":4123456789,
         "p":"64321.12000000","q":"0.00120000","T":1732540000123,"m":true,"M":true}}

    The same payload without the wrapper (a ``/ws/btcusdt@trade`` frame) gives the same Tick.
    ``{"e":"serverShutdown","E":...}`` (bare, wrapped in ``data`` or in ``event``) gives
    :class:`ServerShutdown`.  Raises :class:`FrameError` and nothing else.
    """
    obj = _decode(raw)
    if not isinstance(obj, dict):
        raise FrameError("malformed_json", f"frame must be a JSON object, got {type(obj).__name__}")
    if "stream" in obj:
        stream, data = obj["stream"], obj.get("data")
        if not isinstance(data, dict):
            raise FrameError("missing_field", "combined frame needs a 'data' object")
        if _is_shutdown(data):
            return parse_server_shutdown(data, local_time_ns)
        if not isinstance(stream, str) or "@" not in stream:
            raise FrameError("unknown_stream", f"stream name {stream!r:.60} has no '@'")
        sym, _, suffix = stream.partition("@")
        handler = STREAM_HANDLERS.get(suffix)
        if handler is None:
            raise FrameError("unknown_stream", f"no handler for stream {stream!r:.60}")
        return handler(data, local_time_ns, sym)
    if isinstance(obj.get("event"), dict) and _is_shutdown(obj["event"]):
        return parse_server_shutdown(obj["event"], local_time_ns)
    if _is_shutdown(obj):
        return parse_server_shutdown(obj, local_time_ns)
    if "e" in obj:
        handler = STREAM_HANDLERS.get(obj["e"]) if isinstance(obj["e"], str) else None
        if handler is None:
            raise FrameError("unknown_event", f"no handler for event type {obj['e']!r:.60}")
        return handler(obj, local_time_ns, None)
    if obj.keys() >= _BOOK_TICKER_KEYS:
        return parse_book_ticker(obj, local_time_ns, None)
    raise FrameError("unknown_event", f"unrecognised frame with keys {sorted(obj)[:8]!r}")


def parse_rest_trade(obj: Any, symbol: str, local_time_ns: int) -> Tick:
    """One trade of ``GET /api/v3/historicalTrades`` as a :class:`Tick`.

    Sample::

        {"id":4123456789,"price":"64321.12000000","qty":"0.00120000","quoteQty":"77.18534400",
         "time":1732540000123,"isBuyerMaker":true,"isBestMatch":true}

    ``local_time_ns`` is when we fetched it (the live receive time is unknown for backfill).
    """
    if not isinstance(obj, dict):
        raise FrameError("bad_value", f"REST trade must be an object, got {type(obj).__name__}")
    return Tick(
        exchange=EXCHANGE,
        symbol=symbol,
        trade_id=_int(obj, "id"),
        price=_dec(obj, "price"),
        qty=_dec(obj, "qty"),
        exchange_time=_int(obj, "time", _MAX_MS) * MS,
        local_time=local_time_ns,
        buyer_maker=_bool(obj, "isBuyerMaker"),
    )


STREAM_KINDS: Final = frozenset(STREAM_HANDLERS)


def combined_stream_url(base: str, symbols: Iterable[str], kinds: Iterable[str] = ("trade",)) -> str:
    """``{base}/stream?streams=btcusdt@trade/...`` (stream names lower case, kinds as Binance spells them).

    ``base`` is e.g. ``wss://stream.binance.com:9443``.  Raises ``ValueError`` naming a bad symbol/kind.
    """
    syms, ks = list(symbols), list(kinds)
    if not syms or not ks:
        raise ValueError("combined_stream_url needs at least one symbol and one kind")
    for k in ks:
        if k not in STREAM_KINDS:
            raise ValueError(f"stream kind {k!r} not one of {sorted(STREAM_KINDS)}")
    for s in syms:
        if _SYMBOL.fullmatch(s.upper()) is None:
            raise ValueError(f"bad symbol {s!r}")
    streams = "/".join(f"{s.lower()}@{k}" for s in syms for k in ks)
    if len(syms) * len(ks) > 1024:
        raise ValueError("Binance allows at most 1024 streams per connection")
    return f"{base.rstrip('/')}/stream?streams={streams}"
