"""Plain data the pipeline passes around, and the chunk payload that crosses the broker.

Prices and quantities stay exact decimal strings from the exchange to the database (NUMERIC):
no float ever touches them.  Times are integers in nanoseconds since the Unix epoch, UTC.

A chunk crosses the broker as one compact, columnar JSON object (not a dict per tick)::

    {"v": 1, "exchange": "binance", "chunk_id": "3f1c…",
     "symbol": ["BTCUSDT", …], "trade_id": [4123, …], "price": ["64321.10", …],
     "qty": ["0.00120", …], "exchange_time": [1732540000123000000, …],
     "local_time": [1732540000125300000, …], "buyer_maker": [true, …]}

``buyer_maker`` entries may be null (a source that does not know).  Every list has the same length.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import PayloadError

PAYLOAD_VERSION = 1
PAYLOAD_COLUMNS = ("symbol", "trade_id", "price", "qty", "exchange_time", "local_time", "buyer_maker")
_COLUMNS = PAYLOAD_COLUMNS


@dataclasses.dataclass(frozen=True, slots=True)
class Tick:
    """One trade print.

    ``trade_id`` increases by one per (exchange, symbol); ``price``/``qty`` are exact decimal
    strings; ``exchange_time``/``local_time`` are ns since epoch (UTC).
    """

    exchange: str
    symbol: str
    trade_id: int
    price: str
    qty: str
    exchange_time: int
    local_time: int
    buyer_maker: bool | None = None


def chunk_payload(exchange: str, ticks: Sequence[Tick], chunk_id: str | None = None) -> dict[str, Any]:
    """Columnar JSON-able payload of ``ticks`` (all of one exchange)."""
    return {
        "v": PAYLOAD_VERSION,
        "exchange": exchange,
        "chunk_id": chunk_id or uuid.uuid4().hex,
        "symbol": [t.symbol for t in ticks],
        "trade_id": [t.trade_id for t in ticks],
        "price": [t.price for t in ticks],
        "qty": [t.qty for t in ticks],
        "exchange_time": [t.exchange_time for t in ticks],
        "local_time": [t.local_time for t in ticks],
        "buyer_maker": [t.buyer_maker for t in ticks],
    }


# Plain non-negative decimals ("64321.10", "0.00120", "5"), which Decimal() would accept as finite
# and >= 0: the common case, checked without building a Decimal (a third of the worker's Python
# time per tick, bench).  Everything else takes the full Decimal() path below, unchanged.
_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def _decimal_str(value: Any, column: str, i: int) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"{column}[{i}] must be a decimal string, got {type(value).__name__}")
    if _PLAIN_DECIMAL.fullmatch(value):
        return value
    try:
        d = Decimal(value)
    except InvalidOperation as exc:
        raise PayloadError(f"{column}[{i}] is not a decimal: {value!r}") from exc
    if not d.is_finite() or d < 0:
        raise PayloadError(f"{column}[{i}] must be finite and >= 0: {value!r}")
    return value


def _int(value: Any, column: str, i: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{column}[{i}] must be an integer, got {type(value).__name__}")
    if not 0 <= value < 2**63:
        raise PayloadError(f"{column}[{i}] out of range: {value}")
    return value


def validate_payload(payload: Any) -> Mapping[str, Any]:
    """Check a chunk payload's shape; :class:`PayloadError` says what is wrong.  Returns it."""
    if not isinstance(payload, Mapping):
        raise PayloadError(f"chunk payload must be an object, got {type(payload).__name__}")
    if payload.get("v") != PAYLOAD_VERSION:
        raise PayloadError(f"unsupported chunk payload version {payload.get('v')!r}")
    exchange = payload.get("exchange")
    if not isinstance(exchange, str) or not exchange:
        raise PayloadError("chunk payload needs a non-empty 'exchange' string")
    n = None
    for col in _COLUMNS:
        values = payload.get(col)
        if not isinstance(values, list):
            raise PayloadError(f"chunk payload column {col!r} must be a list")
        if n is None:
            n = len(values)
        elif len(values) != n:
            raise PayloadError(f"chunk payload column {col!r} has {len(values)} entries, expected {n}")
    return payload


def payload_rows(payload: Any) -> Iterator[Tick]:
    """Validated ticks of a chunk payload; raises :class:`PayloadError` on the first bad value."""
    p = validate_payload(payload)
    exchange = p["exchange"]
    for i, (sym, tid, price, qty, et, lt, bm) in enumerate(zip(*(p[c] for c in _COLUMNS), strict=True)):
        if not isinstance(sym, str) or not sym or len(sym) > 64:
            raise PayloadError(f"symbol[{i}] must be a non-empty string (max 64 chars)")
        if bm is not None and not isinstance(bm, bool):
            raise PayloadError(f"buyer_maker[{i}] must be true, false or null")
        yield Tick(
            exchange=exchange,
            symbol=sym,
            trade_id=_int(tid, "trade_id", i),
            price=_decimal_str(price, "price", i),
            qty=_decimal_str(qty, "qty", i),
            exchange_time=_int(et, "exchange_time", i),
            local_time=_int(lt, "local_time", i),
            buyer_maker=bm,
        )


_PLAIN_DECIMALS = re.compile(rf"(?:{_PLAIN_DECIMAL.pattern})(?:\n(?:{_PLAIN_DECIMAL.pattern}))*")
_NONE_TYPE = type(None)
Columns = tuple[list[str], list[int], list[str], list[str], list[int], list[int], list[bool | None]]


def plain_columns(payload: Any) -> tuple[str, Columns] | None:
    """``(exchange, columns)`` of a chunk payload whose every value is valid *and* in its common form
    (the form :func:`payload_rows` accepts without a ``Decimal``), checked a column at a time with
    C-level passes (set of types, min/max, one regex over the joined column) instead of a Python
    call per value: the worker's validation went from ~4.6 to ~0.5 µs per tick (bench).  None when
    any value is not (a bad one, or a decimal in another notation): the caller then takes
    :func:`payload_rows`, which normalises nothing either, and says which value is wrong.
    Raises :class:`PayloadError` for a payload of the wrong shape, as :func:`validate_payload`.
    """
    p = validate_payload(payload)
    sym, tid, price, qty, et, lt, bm = (p[c] for c in _COLUMNS)
    if sym:
        if set(map(type, sym)) != {str} or min(map(len, sym)) == 0 or max(map(len, sym)) > 64:
            return None
        for ints in (tid, et, lt):
            if set(map(type, ints)) != {int} or min(ints) < 0 or max(ints) >= 2**63:
                return None
        for decimals in (price, qty):
            if set(map(type, decimals)) != {str}:
                return None
            joined = "\n".join(decimals)
            # A value holding a newline would pass as two: the count of separators must match.
            if joined.count("\n") != len(decimals) - 1 or not _PLAIN_DECIMALS.fullmatch(joined):
                return None
        if not set(map(type, bm)) <= {bool, _NONE_TYPE}:
            return None
    return p["exchange"], (sym, tid, price, qty, et, lt, bm)


def payload_len(payload: Mapping[str, Any]) -> int:
    """Number of ticks in a (not necessarily valid) payload, 0 when unknown."""
    sym = payload.get("symbol") if isinstance(payload, Mapping) else None
    return len(sym) if isinstance(sym, list) else 0
