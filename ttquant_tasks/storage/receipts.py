"""Which published payloads are stored: the database side of :mod:`ttquant_tasks.feed.confirm`.

* ticks: a probe key is ``(exchange, symbol, trade_id, exchange_time_ns)``, looked up on the
  ``market_data`` natural key (``time`` is ``ttquant_ns_to_timestamptz(exchange_time)``, as the
  writer stores it), all keys in one query;
* gateway records (:func:`record_key`): an order at its status rank or later (a FILLED row
  confirms the NEW record too), a trade by ``trade_id``, a position snapshot by
  ``(strategy_id, symbol, time)``.

Each function raises :class:`~ttquant_tasks.errors.DatabaseUnavailable` (or another
``TTQuantError``) when it cannot answer; the confirmer then holds everything.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, cast

import sqlalchemy as sa

from ..gateway.records import GROUP, STATUS_RANK
from . import schema
from .engine import db_errors
from .orders import status_rank

_TICKS = sa.text("""
SELECT p.exchange, p.symbol, p.trade_id, p.exchange_time
FROM unnest(CAST(:exchange AS text[]), CAST(:symbol AS text[]), CAST(:trade_id AS bigint[]),
            CAST(:exchange_time AS bigint[])) AS p(exchange, symbol, trade_id, exchange_time)
WHERE EXISTS (SELECT 1 FROM market_data m
              WHERE m.exchange = p.exchange AND m.symbol = p.symbol AND m.trade_id = p.trade_id
                AND m.time = ttquant_ns_to_timestamptz(p.exchange_time))
""")

_POSITIONS = sa.text("""
SELECT p.strategy_id, p.symbol, p.time_us
FROM unnest(CAST(:strategy AS text[]), CAST(:symbol AS text[]), CAST(:time_us AS bigint[]))
     AS p(strategy_id, symbol, time_us)
WHERE EXISTS (SELECT 1 FROM positions x
              WHERE x.strategy_id = p.strategy_id AND x.symbol = p.symbol
                AND x.time = ttquant_ns_to_timestamptz(p.time_us * 1000))
""")


def stored_ticks(engine: sa.Engine, keys: list[Hashable]) -> set[Hashable]:
    """The tick probe keys (see module doc) among ``keys`` whose row is in ``market_data``."""
    if not keys:
        return set()
    exchange, symbol, trade_id, exchange_time = (list(col) for col in zip(*cast(list[tuple[Any, ...]], keys),
                                                                           strict=True))
    params = {"exchange": exchange, "symbol": symbol, "trade_id": trade_id, "exchange_time": exchange_time}
    with db_errors("stored_ticks"), engine.connect() as conn:
        return {tuple(r) for r in conn.execute(_TICKS, params)}


def record_key(record: dict[str, Any]) -> tuple[Hashable, ...]:
    """The probe key of a gateway record (see :mod:`ttquant_tasks.gateway.records`); a group has
    those of its records."""
    kind = record["kind"]
    if kind == GROUP:
        return tuple(key for member in record["records"] for key in record_key(member))
    if kind == "order":
        return (("order", str(record["order_id"]), STATUS_RANK[record["status"]]),)
    if kind == "trade":
        return (("trade", str(record["trade_id"])),)
    if kind == "position":
        return (("position", str(record["strategy_id"]), str(record["symbol"]), int(record["time_ns"]) // 1000),)
    raise KeyError(f"unknown record kind {kind!r}")


def stored_records(engine: sa.Engine, keys: list[Hashable]) -> set[Hashable]:
    """The record keys (:func:`record_key`) among ``keys`` whose row is stored."""
    orders = [k for k in keys if isinstance(k, tuple) and k[0] == "order"]
    trades = [k for k in keys if isinstance(k, tuple) and k[0] == "trade"]
    positions = [k for k in keys if isinstance(k, tuple) and k[0] == "position"]
    found: set[Hashable] = set()
    with db_errors("stored_records"), engine.connect() as conn:
        if orders:
            o = schema.orders
            query = sa.select(o.c.order_id, status_rank(o.c.status)).where(o.c.order_id.in_([k[1] for k in orders]))
            ranks = {order_id: rank for order_id, rank in conn.execute(query)}
            found.update(k for k in orders if ranks.get(k[1], -1) >= k[2])
        if trades:
            t = schema.trades
            ids = set(conn.execute(sa.select(t.c.trade_id).where(t.c.trade_id.in_([k[1] for k in trades]))).scalars())
            found.update(k for k in trades if k[1] in ids)
        if positions:
            params = {"strategy": [k[1] for k in positions], "symbol": [k[2] for k in positions],
                      "time_us": [k[3] for k in positions]}
            found.update(("position", *tuple(r)) for r in conn.execute(_POSITIONS, params))
    return found
