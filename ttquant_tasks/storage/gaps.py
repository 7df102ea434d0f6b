"""The ``known_gaps`` table (``sql/004_known_gaps.sql``): trade-id ranges the feed could not fetch.

A range is recorded when the REST backfill gives up on it, so a hole is never silent; a later feed
start retries open ranges and marks them filled.  Ids are inclusive; times are timestamptz (UTC).
Every function raises :class:`~ttquant_tasks.errors.DatabaseUnavailable` when the database cannot
be reached.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from .engine import db_errors

# Mirrors sql/004_known_gaps.sql (the DDL truth); kept here until schema.py takes it over.
known_gaps = sa.Table(
    "known_gaps", sa.MetaData(),
    sa.Column("exchange", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("from_id", sa.BigInteger, primary_key=True),
    sa.Column("to_id", sa.BigInteger, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("filled_at", sa.DateTime(timezone=True)),
)
kg = known_gaps


@dataclasses.dataclass(frozen=True, slots=True)
class KnownGap:
    """One recorded range ``from_id..to_id`` (inclusive); ``filled_at`` None while open."""

    exchange: str
    symbol: str
    from_id: int
    to_id: int
    reason: str
    detected_at: datetime
    filled_at: datetime | None


def record_gap(engine: sa.Engine, exchange: str, symbol: str, from_id: int, to_id: int, reason: str) -> None:
    """Record ``from_id..to_id`` as missing.  Idempotent: recording the same range again changes nothing."""
    if from_id > to_id:
        raise ValueError(f"bad gap range {from_id}..{to_id}")
    stmt = (insert(kg).values(exchange=exchange, symbol=symbol, from_id=from_id, to_id=to_id, reason=reason[:500])
            .on_conflict_do_nothing())
    with db_errors("record_gap"), engine.begin() as conn:
        conn.execute(stmt)


def mark_filled(engine: sa.Engine, exchange: str, symbol: str, from_id: int, to_id: int) -> int:
    """Mark open gaps of ``symbol`` lying inside ``from_id..to_id`` as filled now; returns how many."""
    stmt = (sa.update(kg)
            .where(kg.c.exchange == exchange, kg.c.symbol == symbol, kg.c.filled_at.is_(None),
                   kg.c.from_id >= from_id, kg.c.to_id <= to_id)
            .values(filled_at=sa.func.now()))
    with db_errors("mark_filled"), engine.begin() as conn:
        return int(conn.execute(stmt).rowcount)


def list_gaps(engine: sa.Engine, exchange: str, symbols: list[str] | None = None, *, open_only: bool = False,
              since: datetime | None = None, until: datetime | None = None) -> list[KnownGap]:
    """Recorded gaps of ``exchange`` (``symbols`` None: all), ordered by symbol and first id.

    ``since``/``until`` bound ``detected_at`` (``[since, until)``); ``open_only`` keeps unfilled ones.
    """
    query = sa.select(kg).where(kg.c.exchange == exchange).order_by(kg.c.symbol, kg.c.from_id)
    if symbols is not None:
        query = query.where(kg.c.symbol.in_(symbols))
    if open_only:
        query = query.where(kg.c.filled_at.is_(None))
    if since is not None:
        query = query.where(kg.c.detected_at >= since)
    if until is not None:
        query = query.where(kg.c.detected_at < until)
    with db_errors("list_gaps"), engine.connect() as conn:
        return [KnownGap(**row._mapping) for row in conn.execute(query)]
