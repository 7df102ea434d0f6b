"""Bulk, idempotent writes.

Every writer runs in one transaction and relies on natural keys with ``ON CONFLICT DO NOTHING``,
so a chunk delivered twice (``acks_late``) or overlapping an earlier one stores each row once.
Driver errors are translated here (see :func:`.engine.translate_error`): connection-level ->
:class:`~ttquant_tasks.errors.DatabaseUnavailable`, bad data -> :class:`~ttquant_tasks.errors.PermanentError`.

Room for later: orders/trades/positions writers follow the same shape (staging COPY or a Core
``insert().on_conflict_do_nothing()`` on order_id / trade_id / (strategy_id, symbol, time)).
"""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg2
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from ..models import Columns, Tick, payload_rows, plain_columns
from . import schema
from .engine import db_errors

# Session-private staging table, created once per pooled connection and emptied at each commit
# (cheaper than ON COMMIT DROP, which churns the catalog on every chunk).
_STAGE = "ttquant_stage_ticks"
_STAGE_COLUMNS = ("exchange", "symbol", "trade_id", "price", "qty", "exchange_time", "local_time", "buyer_maker")
_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    exchange text, symbol text, trade_id bigint, price numeric, qty numeric,
    exchange_time bigint, local_time bigint, buyer_maker boolean
) ON COMMIT DELETE ROWS
"""
_COPY = f"COPY {_STAGE} ({', '.join(_STAGE_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
# Plain flavour: make sure every UTC day of the chunk has its partition (backfill included);
# TimescaleDB flavour: the function is a no-op.  The days are worked out in Python from the integer
# times (one set per chunk), not per row in SQL: that DISTINCT cost ~9% of PostgreSQL's CPU per tick.
_ENSURE_DAYS = "SELECT ttquant_ensure_day(d) FROM unnest(%s::date[]) AS d ORDER BY d"
_DAY_NS = 86_400 * 10**9
_EPOCH = datetime.date(1970, 1, 1)
# ORDER BY: concurrent writers take unique-index entries in the same order, so overlapping
# chunks wait for each other instead of deadlocking.
_INSERT = f"""
INSERT INTO market_data (time, symbol, exchange, last_price, volume, exchange_time, local_time,
                         trade_id, buyer_maker)
SELECT ttquant_ns_to_timestamptz(exchange_time), symbol, exchange, price, qty, exchange_time,
       local_time, trade_id, buyer_maker
FROM {_STAGE}
ORDER BY exchange, symbol, trade_id, exchange_time
ON CONFLICT DO NOTHING
"""
# Partition check and insert in one round trip (psycopg2 reports the last statement's rowcount).
_ENSURE_AND_INSERT = f"{_ENSURE_DAYS};\n{_INSERT}"
_STAGE_READY = "ttquant_stage_ready"  # key in the pooled connection's .info: staging table exists


def ticks_csv(ticks: Sequence[Tick]) -> str:
    """The CSV text COPY reads for ``ticks`` (columns as ``_STAGE_COLUMNS``).

    Prices and quantities go as the exact exchange strings; ``buyer_maker`` None becomes an
    unquoted empty field, which CSV COPY reads as NULL.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for t in ticks:
        bm = "" if t.buyer_maker is None else ("t" if t.buyer_maker else "f")
        w.writerow((t.exchange, t.symbol, t.trade_id, t.price, t.qty, t.exchange_time, t.local_time, bm))
    return buf.getvalue()


_BUYER_MAKER_CSV = {None: "", True: "t", False: "f"}


def columns_csv(exchange: str, columns: Columns) -> str:
    """:func:`ticks_csv` of a chunk's validated columns (:func:`~ttquant_tasks.models.plain_columns`),
    written by the csv module in one call: no ``Tick`` and no Python call per row."""
    sym, tid, price, qty, et, lt, bm = columns
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(
        zip(itertools.repeat(exchange), sym, tid, price, qty, et, lt, map(_BUYER_MAKER_CSV.__getitem__, bm)))
    return buf.getvalue()


def utc_days(exchange_times: Iterable[int]) -> list[datetime.date]:
    """The UTC days of these exchange times (ns; what ``time``'s day is: it is the exchange time
    truncated to the microsecond), each once, in order."""
    return [_EPOCH + datetime.timedelta(days=d) for d in sorted({ns // _DAY_NS for ns in exchange_times})]


def insert_ticks(engine: sa.Engine, ticks: Sequence[Tick]) -> int:
    """Store ``ticks`` in ``market_data``; returns how many rows were new.

    One transaction, three round trips: COPY into the staging table (created once per pooled
    connection), then in one statement batch create missing day partitions (plain flavour) and
    ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` on (exchange, symbol, trade_id, time); commit.
    Idempotent: a repeated chunk returns 0.  ``time`` is the exchange time truncated to the
    microsecond; ``exchange_time``/``local_time`` keep the nanoseconds.
    """
    if not ticks:
        return 0
    return _insert_csv(engine, lambda: (ticks_csv(ticks), utc_days(t.exchange_time for t in ticks)))


def insert_payload(engine: sa.Engine, payload: Any) -> int:
    """Validate a columnar chunk payload and store it as :func:`insert_ticks` does; returns rows new.

    A chunk whose values are all in their common form goes from its columns straight to CSV
    (:func:`~ttquant_tasks.models.plain_columns`, :func:`columns_csv`); any other goes through
    :func:`~ttquant_tasks.models.payload_rows`, which raises :class:`~ttquant_tasks.errors.PayloadError`
    naming the first bad value.  Both write the same CSV for the same ticks.  The connection comes
    first: with the database away, the chunk fails (and is retried) before any work is spent on it.
    """

    def csv_and_days() -> tuple[str, list[datetime.date]]:
        plain = plain_columns(payload)
        if plain is None:
            ticks = list(payload_rows(payload))
            return ticks_csv(ticks), utc_days(t.exchange_time for t in ticks)
        exchange, columns = plain
        return columns_csv(exchange, columns), utc_days(columns[4])

    return _insert_csv(engine, csv_and_days)


def _insert_csv(engine: sa.Engine, prepare: Callable[[], tuple[str, list[datetime.date]]]) -> int:
    """Check out a connection, then ``prepare()`` the CSV and its UTC days, COPY, insert, commit."""
    with db_errors("insert_ticks"):
        raw = engine.raw_connection()
        try:
            data, days = prepare()
            if not data:
                return 0
            cur: Any = raw.cursor()  # psycopg2 cursor: copy_expert is not in the DBAPI protocol
            try:
                if not raw.info.get(_STAGE_READY):
                    cur.execute(_CREATE_STAGE)
                    raw.info[_STAGE_READY] = True
                cur.copy_expert(_COPY, io.StringIO(data))
                cur.execute(_ENSURE_AND_INSERT, (days,))
                new = int(cur.rowcount)
            finally:
                cur.close()
            raw.commit()
            return new
        except BaseException as exc:
            # A rollback also undoes a CREATE TEMP TABLE of this transaction: create it again next time.
            raw.info.pop(_STAGE_READY, None)
            _release_after_error(raw, exc)
            raise
        finally:
            raw.close()


def _release_after_error(raw: Any, exc: BaseException) -> None:
    """Roll back; a connection that failed at the connection level is not put back in the pool."""
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        raw.invalidate(exc if isinstance(exc, Exception) else None)
        return
    try:
        raw.rollback()
    except psycopg2.Error:
        raw.invalidate()


def dead_letter_json(payload: Any) -> str:
    """``payload`` as JSON text jsonb accepts: unknown types by ``repr``, NUL characters replaced
    (jsonb refuses ``\\u0000``), so recording a bad payload cannot fail because it is bad."""
    return json.dumps(payload, default=repr, ensure_ascii=False).replace("\\u0000", "\\ufffd")


def _clean_text(value: str) -> str:
    return value.replace("\x00", "\ufffd")


def insert_dead_letter(engine: sa.Engine, task: str, reason: str, payload: Any) -> None:
    """Record a payload that can never succeed, with the task name and the reason (one row)."""
    stmt = schema.dead_letters.insert().values(
        task=_clean_text(task),
        reason=_clean_text(reason),
        payload=sa.cast(sa.literal(dead_letter_json(payload), sa.Text), JSONB),
    )
    with db_errors("insert_dead_letter"), engine.begin() as conn:
        conn.execute(stmt)
