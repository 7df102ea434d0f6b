"""Read-side queries for status, audits and tests.  All raise
:class:`~ttquant_tasks.errors.DatabaseUnavailable` when the database cannot be reached."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa

from . import schema
from .engine import db_errors

md = schema.market_data


def table_counts(engine: sa.Engine) -> dict[str, int]:
    """Exact row count of each data table (``schema.TABLES``).

    Exact means a full scan: fine for tests and small databases, slow on months of ticks
    (use ``db_size`` or TimescaleDB's ``approximate_row_count`` for dashboards).
    """
    tables = [schema.metadata.tables[name] for name in schema.TABLES]
    query = sa.select(*(sa.select(sa.func.count()).select_from(t).scalar_subquery().label(t.name)
                        for t in tables))
    with db_errors("table_counts"), engine.connect() as conn:
        row = conn.execute(query).one()
    return {name: int(row._mapping[name]) for name in schema.TABLES}


def tick_ids(engine: sa.Engine, exchange: str, symbol: str) -> list[int]:
    """Stored trade ids of ``exchange``/``symbol`` in ascending order (duplicates kept)."""
    query = sa.select(md.c.trade_id).where(md.c.exchange == exchange, md.c.symbol == symbol).order_by(md.c.trade_id)
    with db_errors("tick_ids"), engine.connect() as conn:
        return [int(v) for v in conn.execute(query).scalars()]


def duplicate_ticks(engine: sa.Engine) -> int:
    """How many (exchange, symbol, trade_id) appear more than once (0 when exactly once)."""
    dup = (sa.select(md.c.exchange, md.c.symbol, md.c.trade_id)
           .group_by(md.c.exchange, md.c.symbol, md.c.trade_id)
           .having(sa.func.count() > 1).subquery())
    with db_errors("duplicate_ticks"), engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(dup)).scalar_one())


def last_trade_ids(engine: sa.Engine, exchange: str, symbols: Iterable[str]) -> dict[str, int]:
    """Newest stored trade id per symbol of ``exchange``; symbols without rows are absent."""
    wanted = list(symbols)
    if not wanted:
        return {}
    query = (sa.select(md.c.symbol, sa.func.max(md.c.trade_id))
             .where(md.c.exchange == exchange, md.c.symbol.in_(wanted))
             .group_by(md.c.symbol))
    with db_errors("last_trade_ids"), engine.connect() as conn:
        return {str(sym): int(tid) for sym, tid in conn.execute(query)}


def count_ticks_since(engine: sa.Engine, exchange: str, since_ns: int) -> int:
    """Ticks of ``exchange`` received (``local_time``, ns) at or after ``since_ns``."""
    # The bound on `time` (exchange time, an hour of slack) lets the planner prune partitions/chunks.
    horizon = datetime.fromtimestamp(since_ns / 1e9 - 3600, tz=UTC)
    query = (sa.select(sa.func.count()).select_from(md)
             .where(md.c.exchange == exchange, md.c.time >= horizon, md.c.local_time >= since_ns))
    with db_errors("count_ticks_since"), engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def db_size(engine: sa.Engine) -> int:
    """Size of the current database in bytes (``pg_database_size``)."""
    with db_errors("db_size"), engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.pg_database_size(sa.func.current_database()))).scalar_one())
