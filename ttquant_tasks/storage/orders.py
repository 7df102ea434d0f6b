"""Idempotent writes of the gateway's rows (``orders``, ``trades``, ``positions``) and the restore query.

Each writer takes one record payload (see :mod:`ttquant_tasks.gateway.records`), validates it
(:class:`~ttquant_tasks.errors.PayloadError` when malformed) and writes it in one transaction:

* ``upsert_order``: insert, or move the status forward only (rank NEW < PARTIALLY_FILLED <
  FILLED = REJECTED); a repeated or late record changes nothing;
* ``insert_trade``: ``ON CONFLICT (trade_id) DO NOTHING``;
* ``insert_position``: ``ON CONFLICT (strategy_id, symbol, time) DO NOTHING`` (history rows).

Each returns the number of rows inserted or changed (0 or 1).  Driver errors are translated as in
:mod:`.writers`: connection-level -> ``DatabaseUnavailable``, bad data -> ``PermanentError``.
``time`` columns are the record's nanoseconds truncated to the microsecond (timestamptz), UTC.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from ..gateway.positions import Position
from ..gateway.records import STATUS_RANK, parse_record
from . import schema
from .engine import db_errors

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def ns_to_datetime(ns: int) -> dt.datetime:
    """Nanoseconds since the epoch as an aware UTC datetime, truncated to the microsecond (exact)."""
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


def _rank(column: Any) -> sa.ColumnElement[int]:
    return sa.case(STATUS_RANK, value=column, else_=-1)


def upsert_order(engine: sa.Engine, payload: Any) -> int:
    """Write an order record: insert it, or advance the stored status (never backwards)."""
    rec = parse_record(payload, "order")
    t = schema.orders
    stmt = insert(t).values(
        time=ns_to_datetime(rec["time_ns"]), order_id=rec["order_id"], strategy_id=rec["strategy_id"],
        symbol=rec["symbol"], side=rec["side"], price=rec["price"], volume=rec["volume"],
        timestamp=rec["timestamp"], status=rec["status"], updated_at=ns_to_datetime(rec["updated_ns"]),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.order_id],
        set_={"status": stmt.excluded.status, "updated_at": stmt.excluded.updated_at},
        where=_rank(t.c.status) < _rank(stmt.excluded.status),
    )
    with db_errors("upsert_order"), engine.begin() as conn:
        return int(conn.execute(stmt).rowcount)


def insert_trade(engine: sa.Engine, payload: Any) -> int:
    """Write a trade record (fill or rejection) once, keyed by ``trade_id``."""
    rec = parse_record(payload, "trade")
    row = {k: v for k, v in rec.items() if k != "trade_time"}
    stmt = insert(schema.trades).values(
        time=ns_to_datetime(rec["trade_time"]), trade_time=rec["trade_time"], **row,
    ).on_conflict_do_nothing(index_elements=[schema.trades.c.trade_id])
    with db_errors("insert_trade"), engine.begin() as conn:
        return int(conn.execute(stmt).rowcount)


def insert_position(engine: sa.Engine, payload: Any) -> int:
    """Write a position snapshot once, keyed by ``(strategy_id, symbol, time)``."""
    rec = parse_record(payload, "position")
    row = {k: v for k, v in rec.items() if k != "time_ns"}
    stmt = insert(schema.positions).values(time=ns_to_datetime(rec["time_ns"]), **row).on_conflict_do_nothing(
        constraint="positions_natural_key")
    with db_errors("insert_position"), engine.begin() as conn:
        return int(conn.execute(stmt).rowcount)


def position_times(engine: sa.Engine) -> dict[tuple[str, str], int]:
    """Time (ns since epoch) of the newest snapshot per (strategy, symbol)."""
    lp = schema.latest_positions
    query = sa.select(lp.c.strategy_id, lp.c.symbol, lp.c.time)
    with db_errors("position_times"), engine.connect() as conn:
        return {(r.strategy_id, r.symbol): int(r.time.timestamp() * 1_000_000) * 1000 for r in conn.execute(query)}


def load_positions(engine: sa.Engine) -> list[Position]:
    """The newest snapshot per (strategy, symbol), for a gateway restart.

    ``fees`` is not a snapshot column: it is the sum of the commissions of the FILLED trades of
    that strategy and symbol.  Flat positions are returned too (their realized PnL matters).
    """
    lp, tr = schema.latest_positions, schema.trades
    fees = (
        sa.select(tr.c.strategy_id, tr.c.symbol, sa.func.sum(tr.c.commission).label("fees"))
        .where(tr.c.status == "FILLED")
        .group_by(tr.c.strategy_id, tr.c.symbol)
        .subquery()
    )
    query = (
        sa.select(lp.c.strategy_id, lp.c.symbol, lp.c.position, lp.c.avg_price, lp.c.realized_pnl, fees.c.fees)
        .select_from(lp.outerjoin(fees, sa.and_(fees.c.strategy_id == lp.c.strategy_id,
                                                fees.c.symbol == lp.c.symbol)))
        .order_by(lp.c.strategy_id, lp.c.symbol)
    )
    zero = Decimal(0)
    with db_errors("load_positions"), engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        Position(strategy_id=r.strategy_id, symbol=r.symbol, quantity=Decimal(r.position),
                 avg_price=Decimal(r.avg_price or zero), realized_pnl=Decimal(r.realized_pnl or zero),
                 fees=Decimal(r.fees or zero))
        for r in rows
    ]
