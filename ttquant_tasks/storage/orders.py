"""Idempotent writes of the gateway's rows (``orders``, ``trades``, ``positions``) and the restore query.

Each writer takes one record payload (see :mod:`ttquant_tasks.gateway.records`), validates it
(:class:`~ttquant_tasks.errors.PayloadError` when malformed) and writes it as ONE autocommit
statement (atomic on its own):

* ``upsert_order``: insert, or move the status forward only (rank NEW < PARTIALLY_FILLED <
  FILLED = REJECTED); a repeated or late record changes nothing;
* ``insert_trade``: ``ON CONFLICT (trade_id) DO NOTHING``;
* ``insert_position``: ``ON CONFLICT (strategy_id, symbol, time) DO NOTHING`` (history rows);
* ``write_group``: the records of one ``group`` payload (an order's NEW, fills, snapshots and final
  status) with those same statements in ONE transaction: one round trip each and one commit.

Each returns the number of rows inserted or changed (0 or 1).  Driver errors are translated as in
:mod:`.writers`: connection-level -> ``DatabaseUnavailable``, bad data -> ``PermanentError``.
``time`` columns are the record's nanoseconds truncated to the microsecond (timestamptz), UTC.

Why not ``engine.begin()``: pool checkout (with its pre-ping), BEGIN, the statement and COMMIT
cost 3-4 round trips and the Core compile/execute machinery per order; here each write is one
round trip on a psycopg2 connection kept open per (process, engine) in autocommit mode, with the
SQL compiled once at import.  That connection is outside the engine's pool (:func:`.engine.connect_raw`):

* it belongs to the process that opened it: a forked child (Celery prefork) never uses or closes
  its parent's, it opens its own on first use;
* a connection-level failure closes and forgets it; the next write opens a new one.  When a
  connection opened before this write fails that way (server restarted, backend terminated) the
  statement is sent once more on a new connection at once -- safe because every write is
  idempotent, and the same as ``pool_pre_ping`` did for the pooled path -- and a second failure
  raises ``DatabaseUnavailable`` (the task retries it);
* ``engine.dispose()`` closes it too (tests, :func:`.engine.dispose_all`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.dialects.postgresql import psycopg2 as pg_dialect

from ..errors import PayloadError
from ..gateway.positions import Position
from ..gateway.records import STATUS_RANK, group_members, parse_record
from . import schema
from .engine import connect_raw, db_errors

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def ns_to_datetime(ns: int) -> dt.datetime:
    """Nanoseconds since the epoch as an aware UTC datetime, truncated to the microsecond (exact)."""
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


def status_rank(column: Any) -> sa.ColumnElement[int]:
    """SQL: the rank of an order status column (``STATUS_RANK``; -1 for anything else)."""
    return sa.case(STATUS_RANK, value=column, else_=-1)


# ---------------------------------------------------------------- statements, compiled once


@dataclass(frozen=True)
class _Statement:
    """SQL text for psycopg2 (``%(name)s`` placeholders) and the values of its constant parameters."""

    what: str
    sql: str
    constants: Mapping[str, Any]


def _compile(what: str, stmt: Any, table: sa.Table) -> _Statement:
    columns = [c.name for c in table.c]
    compiled = stmt.compile(dialect=pg_dialect.dialect(), column_keys=columns)  # type: ignore[no-untyped-call]
    # Parameters that are not columns are the literals of the statement (the status ranks).
    constants = {k: v for k, v in compiled.params.items() if k not in columns}
    return _Statement(what, str(compiled), constants)


def _order_statement() -> _Statement:
    t = schema.orders
    stmt = insert(t)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.order_id],
        set_={"status": stmt.excluded.status, "updated_at": stmt.excluded.updated_at},
        where=status_rank(t.c.status) < status_rank(stmt.excluded.status),
    )
    return _compile("upsert_order", stmt, t)


_UPSERT_ORDER = _order_statement()
_INSERT_TRADE = _compile("insert_trade", insert(schema.trades).on_conflict_do_nothing(
    index_elements=[schema.trades.c.trade_id]), schema.trades)
_INSERT_POSITION = _compile("insert_position", insert(schema.positions).on_conflict_do_nothing(
    constraint="positions_natural_key"), schema.positions)


# ---------------------------------------------------------------- one connection per process and engine


@dataclass(eq=False)
class _Link:
    """This process's autocommit connection to one engine's database."""

    pid: int
    conn: psycopg2.extensions.connection
    lock: threading.Lock = field(default_factory=threading.Lock)

    def execute(self, statements: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
        """Run ``statements``: one alone autocommits, several run in one transaction."""
        with self.lock, self.conn.cursor() as cur:
            if len(statements) == 1:
                cur.execute(*statements[0])
                return int(cur.rowcount)
            cur.execute("BEGIN")
            try:
                changed = 0
                for sql, params in statements:
                    cur.execute(sql, params)
                    changed += int(cur.rowcount)
                cur.execute("COMMIT")
            except BaseException:
                # Leaves the session idle again, or (connection gone) not reusable: see reusable().
                with contextlib.suppress(psycopg2.Error):
                    cur.execute("ROLLBACK")
                raise
            return changed

    def reusable(self) -> bool:
        """Still open, in this process, and not inside a transaction (autocommit: it never should be)."""
        return (self.pid == os.getpid() and self.conn.closed == 0
                and self.conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE)

    def close(self) -> None:
        """Close the connection, in the process that opened it only (a child must not end the
        parent's session; psycopg2's own finalizer checks the pid the same way)."""
        if self.pid != os.getpid():
            return
        try:
            with self.lock:
                self.conn.close()
        except psycopg2.Error:
            pass


_links: weakref.WeakKeyDictionary[sa.Engine, _Link] = weakref.WeakKeyDictionary()
_links_lock = threading.Lock()


def _link(engine: sa.Engine) -> tuple[_Link, bool]:
    """The open connection of this process to ``engine``'s database, and whether it was opened by
    this call (else it was opened earlier: by a previous write or the worker's warm-up)."""
    link = _links.get(engine)
    if link is not None and link.pid == os.getpid() and link.conn.closed == 0:
        return link, False
    with _links_lock:
        link = _links.get(engine)
        if link is not None and link.pid == os.getpid() and link.conn.closed == 0:
            return link, False
        if link is not None:
            link.close()  # closed already, or a parent's (then close() leaves it alone)
            del _links[engine]
        conn = connect_raw(engine)
        try:
            conn.autocommit = True
        except BaseException:
            conn.close()
            raise
        link = _links[engine] = _Link(os.getpid(), conn)
        if not sa.event.contains(engine, "engine_disposed", _on_engine_disposed):
            sa.event.listen(engine, "engine_disposed", _on_engine_disposed)
        return link, True


def _forget(engine: sa.Engine, link: _Link) -> None:
    """Close ``link`` and drop it from the cache (if it is still the cached one)."""
    with _links_lock:
        if _links.get(engine) is link:
            del _links[engine]
    link.close()


def _on_engine_disposed(engine: sa.Engine) -> None:
    with _links_lock:
        link = _links.pop(engine, None)
    if link is not None:
        link.close()


def _after_fork_in_child() -> None:
    """Forget the parent's connections without closing them (they are still the parent's)."""
    global _links_lock
    _links_lock = threading.Lock()  # another thread of the parent may have held it at fork time
    _links.clear()  # psycopg2 does not close a connection collected in another process than its own


os.register_at_fork(after_in_child=_after_fork_in_child)


def open_connection(engine: sa.Engine) -> None:
    """Open this process's writer connection to ``engine`` now (worker start) rather than in the
    first write.  Raises ``DatabaseUnavailable`` when the database cannot be reached."""
    with db_errors("open order-writer connection"):
        _link(engine)


def _write(engine: sa.Engine, what: str, rows: Sequence[tuple[_Statement, Mapping[str, Any]]]) -> int:
    """Run each ``(statement, row)``, in one transaction when there are several (one autocommit
    statement otherwise); rows inserted or changed."""
    statements = [(stmt.sql, {**stmt.constants, **row}) for stmt, row in rows]
    with db_errors(what):
        link, opened_now = _link(engine)
        try:
            return link.execute(statements)
        except BaseException as exc:
            if link.reusable() and isinstance(exc, psycopg2.Error):
                raise  # bad data, missing table, deadlock...: the connection itself is fine
            _forget(engine, link)
            stale = not opened_now and isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
            if not stale:
                raise
        # A connection opened earlier is dead (restart, terminated backend, network cut since it
        # was last used): once more on a new one.  Idempotent, so a statement that did commit
        # before the connection died changes nothing the second time.
        return _link(engine)[0].execute(statements)


# ---------------------------------------------------------------- the writers


def _order_row(payload: Any) -> tuple[_Statement, dict[str, Any]]:
    rec = parse_record(payload, "order")
    return _UPSERT_ORDER, {
        "time": ns_to_datetime(rec["time_ns"]), "order_id": rec["order_id"], "strategy_id": rec["strategy_id"],
        "symbol": rec["symbol"], "side": rec["side"], "price": rec["price"], "volume": rec["volume"],
        "timestamp": rec["timestamp"], "status": rec["status"], "updated_at": ns_to_datetime(rec["updated_ns"]),
    }


def _trade_row(payload: Any) -> tuple[_Statement, dict[str, Any]]:
    rec = parse_record(payload, "trade")
    return _INSERT_TRADE, {**rec, "time": ns_to_datetime(rec["trade_time"])}


def _position_row(payload: Any) -> tuple[_Statement, dict[str, Any]]:
    rec = parse_record(payload, "position")
    row = {k: v for k, v in rec.items() if k != "time_ns"}
    row["time"] = ns_to_datetime(rec["time_ns"])
    return _INSERT_POSITION, row


_ROW_OF_KIND = {"order": _order_row, "trade": _trade_row, "position": _position_row}


def upsert_order(engine: sa.Engine, payload: Any) -> int:
    """Write an order record: insert it, or advance the stored status (never backwards)."""
    return _write(engine, "upsert_order", [_order_row(payload)])


def insert_trade(engine: sa.Engine, payload: Any) -> int:
    """Write a trade record (fill or rejection) once, keyed by ``trade_id``."""
    return _write(engine, "insert_trade", [_trade_row(payload)])


def insert_position(engine: sa.Engine, payload: Any) -> int:
    """Write a position snapshot once, keyed by ``(strategy_id, symbol, time)``."""
    return _write(engine, "insert_position", [_position_row(payload)])


def write_group(engine: sa.Engine, payload: Any) -> int:
    """Write every record of a ``group`` payload in one transaction (all or nothing); rows new or changed.

    Every record is validated before anything is written: one bad record refuses the whole group
    with a :class:`PayloadError` naming it (the group is then dead-lettered whole, kept for an operator).
    """
    rows = []
    for i, record in enumerate(group_members(payload)):
        kind = record.get("kind") if isinstance(record, Mapping) else None
        row_of = _ROW_OF_KIND.get(kind) if isinstance(kind, str) else None
        try:
            if row_of is None:
                raise PayloadError(f"field 'kind' is {kind!r}, not one of {sorted(_ROW_OF_KIND)}")
            rows.append(row_of(record))
        except PayloadError as exc:
            raise PayloadError(f"record group {payload.get('chunk_id')!r}, record {i}: {exc}") from None
    return _write(engine, "write_group", rows)


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
