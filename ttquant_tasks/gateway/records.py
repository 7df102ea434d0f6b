"""JSON payloads for the ``orders``, ``trades`` and ``positions`` rows, and their validation.  Pure.

The gateway builds one payload per row and hands them to its enqueuer; a Celery task of the
``orders`` queue (``ttquant.write_order`` / ``write_trade`` / ``write_position``, chosen by
``kind``, or ``write_records`` for a group, below) validates it with :func:`parse_record` and
writes it (:mod:`ttquant_tasks.storage.orders`).

Every payload is a flat JSON object with ``kind``, ``version`` and a ``chunk_id`` that names the
row's natural key (the worker counts redeliveries by it).  Prices, quantities and PnL are decimal
*strings* (JSON numbers would go through float); times are integer nanoseconds since the epoch,
UTC.  Payloads carry every column of their row, so each one can be written on its own, twice, or
out of order:

* ``order``: the whole order row plus ``status``.  The writer inserts it, or moves an existing
  row's status forward only (NEW -> PARTIALLY_FILLED -> FILLED | REJECTED), so a late NEW cannot
  undo a FILLED.
* ``trade``: one fill (``FILLED``) or one rejection (``REJECTED`` with code and message), keyed by
  ``trade_id``; ``realized_pnl`` is the PnL this fill realized (after its commission).
* ``position``: a snapshot after a fill, keyed by ``(strategy_id, symbol, time_ns)``.  It also
  carries ``fees`` (commissions so far; not a column, the worker ignores it) so that the gateway can
  restore the whole position from its journal (:mod:`.journal`).

An order's records travel together as one ``group`` payload (:func:`group_record`, task
``ttquant.write_records``): ``{"kind": "group", "version": 1, "chunk_id": ..., "records": [...]}``,
written in one transaction, so one order costs one broker message, one task and one commit
instead of four.  Each record in it is a complete record as above; a single record may still be
sent on its own (journal replay, older gateways).

Example (an order record)::

    {"kind": "order", "version": 1, "chunk_id": "order:o-1:FILLED", "order_id": "o-1",
     "strategy_id": "s1", "symbol": "BTCUSDT", "side": "BUY", "price": "0", "volume": "0.5",
     "timestamp": 1718000000000000000, "status": "FILLED", "time_ns": 1718000000001000000,
     "updated_ns": 1718000000002000000}
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import PayloadError
from .orders import Fill, OrderRequest, Rejection
from .positions import Position, unrealized_pnl

RECORD_VERSION = 1
KINDS = ("order", "trade", "position")
GROUP = "group"
"""``kind`` of a payload carrying several records (see module doc)."""
ORDER_STATUSES = ("NEW", "PARTIALLY_FILLED", "FILLED", "REJECTED")
STATUS_RANK = {"NEW": 0, "PARTIALLY_FILLED": 1, "FILLED": 2, "REJECTED": 2}
"""Order status moves only to a higher rank; FILLED and REJECTED are final."""

_NS_MAX = 2**63 - 1


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; a strategy's garbage must not make the row unwritable.
    return value.replace("\x00", "\ufffd")


def _dec(value: Decimal) -> str:
    return format(value, "f")


def order_status(order: OrderRequest, outcome: list[Fill] | Rejection) -> str:
    """FILLED when the fills cover the quantity, PARTIALLY_FILLED when some, REJECTED otherwise."""
    if isinstance(outcome, Rejection) or not outcome:
        return "REJECTED"
    filled = sum((f.quantity for f in outcome), Decimal(0))
    return "FILLED" if filled >= order.quantity else "PARTIALLY_FILLED"


def order_record(order: OrderRequest, status: str, received_ns: int, updated_ns: int) -> dict[str, Any]:
    """The ``orders`` row of ``order`` with ``status``; ``received_ns`` becomes ``time``."""
    if status not in STATUS_RANK:
        raise ValueError(f"status {status!r} is not one of {ORDER_STATUSES}")
    return {
        "kind": "order", "version": RECORD_VERSION, "chunk_id": f"order:{order.order_id}:{status}",
        "order_id": order.order_id, "strategy_id": order.strategy_id, "symbol": order.symbol,
        "side": order.side, "price": _dec(order.price), "volume": _dec(order.quantity),
        "timestamp": order.timestamp_ns, "status": status, "time_ns": received_ns, "updated_ns": updated_ns,
    }


def fill_record(fill: Fill, realized_pnl: Decimal) -> dict[str, Any]:
    """The ``trades`` row of one fill; ``realized_pnl`` is what this fill realized (quote asset)."""
    return {
        "kind": "trade", "version": RECORD_VERSION, "chunk_id": f"trade:{fill.trade_id}",
        "trade_id": fill.trade_id, "order_id": fill.order_id, "strategy_id": fill.strategy_id,
        "symbol": fill.symbol, "side": fill.side, "filled_price": _dec(fill.price),
        "filled_volume": _dec(fill.quantity), "trade_time": fill.time_ns, "status": "FILLED",
        "error_code": None, "error_message": None, "is_retryable": None,
        "commission": _dec(fill.commission), "realized_pnl": _dec(realized_pnl),
    }


def rejection_record(*, trade_id: str, order_id: str, strategy_id: str, symbol: str, side: str,
                     rejection: Rejection, time_ns: int) -> dict[str, Any]:
    """The ``trades`` row of a rejection (fields as the strategy sent them, NUL-cleaned)."""
    return {
        "kind": "trade", "version": RECORD_VERSION, "chunk_id": f"trade:{trade_id}",
        "trade_id": trade_id, "order_id": _text(order_id), "strategy_id": _text(strategy_id),
        "symbol": _text(symbol), "side": _text(side), "filled_price": None, "filled_volume": None,
        "trade_time": time_ns, "status": "REJECTED", "error_code": int(rejection.code),
        "error_message": _text(rejection.reason), "is_retryable": rejection.retryable,
        "commission": "0", "realized_pnl": None,
    }


def position_record(pos: Position, mark: Decimal, time_ns: int) -> dict[str, Any]:
    """A ``positions`` snapshot at ``time_ns``; unrealized PnL at ``mark`` (quote asset)."""
    return {
        "kind": "position", "version": RECORD_VERSION,
        "chunk_id": f"position:{pos.strategy_id}:{pos.symbol}:{time_ns}",
        "strategy_id": pos.strategy_id, "symbol": pos.symbol, "position": _dec(pos.quantity),
        "avg_price": _dec(pos.avg_price), "unrealized_pnl": _dec(unrealized_pnl(pos, mark)),
        "realized_pnl": _dec(pos.realized_pnl), "fees": _dec(pos.fees), "time_ns": time_ns,
    }


def group_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One payload carrying ``records`` (in order), written in one transaction by the worker.

    Its ``chunk_id`` names its first record and how many there are: the same records grouped
    again (a replay) give the same id.
    """
    if not records:
        raise ValueError("a record group needs at least one record")
    return {"kind": GROUP, "version": RECORD_VERSION,
            "chunk_id": f"group:{records[0].get('chunk_id')}+{len(records)}", "records": list(records)}


def group_members(payload: Any) -> list[Any]:
    """The records of a ``group`` payload; :class:`PayloadError` when it is not one."""
    if not isinstance(payload, Mapping) or payload.get("kind") != GROUP:
        raise PayloadError("record group: expected a JSON object with kind 'group'")
    if payload.get("version") != RECORD_VERSION:
        raise PayloadError(f"record group: unsupported version {payload.get('version')!r}")
    records = payload.get("records")
    if not isinstance(records, list) or not records:
        raise PayloadError("record group: field 'records' must be a non-empty list")
    return records


# ---------------------------------------------------------------- validation (worker side)

_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    # kind -> field -> (type, nullable); "str" text, "dec" decimal string, "ns" int64 ns, "int", "bool"
    "order": {"order_id": ("str", False), "strategy_id": ("str", False), "symbol": ("str", False),
              "side": ("str", False), "price": ("dec", False), "volume": ("dec", False),
              "timestamp": ("ns", False), "status": ("str", False), "time_ns": ("ns", False),
              "updated_ns": ("ns", False)},
    "trade": {"trade_id": ("str", False), "order_id": ("str", False), "strategy_id": ("str", False),
              "symbol": ("str", False), "side": ("str", False), "filled_price": ("dec", True),
              "filled_volume": ("dec", True), "trade_time": ("ns", False), "status": ("str", False),
              "error_code": ("int", True), "error_message": ("str", True), "is_retryable": ("bool", True),
              "commission": ("dec", False), "realized_pnl": ("dec", True)},
    "position": {"strategy_id": ("str", False), "symbol": ("str", False), "position": ("dec", False),
                 "avg_price": ("dec", True), "unrealized_pnl": ("dec", True), "realized_pnl": ("dec", True),
                 "time_ns": ("ns", False)},
}


def _field(kind: str, name: str, value: Any, typ: str, nullable: bool) -> Any:
    where = f"{kind} record field {name!r}"
    if value is None:
        if nullable:
            return None
        raise PayloadError(f"{where} is missing")
    if typ == "str":
        if not isinstance(value, str):
            raise PayloadError(f"{where}: expected a string, got {value!r}")
        return value
    if typ == "dec":
        if not isinstance(value, str):
            raise PayloadError(f"{where}: expected a decimal string, got {value!r}")
        try:
            dec = Decimal(value)
        except InvalidOperation:
            raise PayloadError(f"{where}: {value!r} is not a decimal number") from None
        if not dec.is_finite():
            raise PayloadError(f"{where}: {value!r} is not finite")
        return dec
    if typ == "bool":
        if not isinstance(value, bool):
            raise PayloadError(f"{where}: expected true/false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{where}: expected an integer, got {value!r}")
    if typ == "ns" and not 0 < value <= _NS_MAX:
        raise PayloadError(f"{where}: {value} is not a positive int64 of nanoseconds")
    return value


def parse_record(payload: Any, kind: str) -> dict[str, Any]:
    """The typed fields of a ``kind`` record (decimals as ``Decimal``); :class:`PayloadError` naming
    the bad field otherwise.  Unknown extra fields are ignored (newer gateways may add some)."""
    if kind not in _FIELDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(payload, Mapping):
        raise PayloadError(f"{kind} record: expected a JSON object, got {type(payload).__name__}")
    if payload.get("kind") != kind:
        raise PayloadError(f"{kind} record: field 'kind' is {payload.get('kind')!r}")
    if payload.get("version") != RECORD_VERSION:
        raise PayloadError(f"{kind} record: unsupported version {payload.get('version')!r}")
    out = {name: _field(kind, name, payload.get(name), typ, nullable)
           for name, (typ, nullable) in _FIELDS[kind].items()}
    if kind == "order" and out["status"] not in STATUS_RANK:
        raise PayloadError(f"order record field 'status': {out['status']!r} is not one of {ORDER_STATUSES}")
    if kind == "trade" and out["status"] not in ("FILLED", "REJECTED"):
        raise PayloadError(f"trade record field 'status': {out['status']!r} is not FILLED or REJECTED")
    return out
