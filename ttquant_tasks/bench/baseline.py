"""Measurements 1 and 2: the physical ceiling (raw COPY, 1 and 2 connections) and TTQuant's way
(row-by-row INSERT, one transaction per 100 rows), on the same generated ticks.

The CSV text and row tuples are prepared before the clock starts: only the database work is
timed.  COPY goes straight into ``market_data`` (with its natural key and index, no staging, no
conflict handling), in batches of 10,000 rows each committed.  ``market_data`` is truncated before
each variant so every one starts from the same empty table (a private bench database).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg2

from ..feed.sim import SimSource
from ..models import Tick
from .report import Figure

_COLUMNS = "time, symbol, exchange, last_price, volume, exchange_time, local_time, trade_id, buyer_maker"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_COPY_BATCH = 10_000
_ROWS_PER_TXN = 100


def make_ticks(n: int, exchange: str, symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
               ) -> list[Tick]:
    """``n`` sim ticks (consecutive ids per symbol, times = now)."""
    src = SimSource(symbols, rate="max", exchange=exchange, seed=1)
    return [next(src) for _ in range(n)]


def row(t: Tick) -> tuple[Any, ...]:
    """A ``market_data`` row (``_COLUMNS`` order); time = exchange time truncated to the µs, UTC."""
    when = _EPOCH + dt.timedelta(microseconds=t.exchange_time // 1000)
    return (when.isoformat(), t.symbol, t.exchange, t.price, t.qty, t.exchange_time, t.local_time, t.trade_id,
            t.buyer_maker)


def _csv(rows: Sequence[tuple[Any, ...]]) -> str:
    out = io.StringIO()
    for r in rows:
        out.write(",".join("" if v is None else ("t" if v is True else "f" if v is False else str(v)) for v in r))
        out.write("\n")
    return out.getvalue()


def _prepare(uri: str, ticks: Sequence[Tick]) -> None:
    days = sorted({(_EPOCH + dt.timedelta(microseconds=t.exchange_time // 1000)).date() for t in ticks})
    with contextlib.closing(psycopg2.connect(uri)) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE market_data")
        for d in days:  # plain flavour needs the day's partition; a no-op on TimescaleDB
            cur.execute("SELECT ttquant_ensure_day(%s)", (d,))
        conn.commit()


def _copy_worker(uri: str, texts: Sequence[str], errors: list[BaseException]) -> None:
    try:
        with contextlib.closing(psycopg2.connect(uri)) as conn, conn.cursor() as cur:
            for text in texts:
                cur.copy_expert(f"COPY market_data ({_COLUMNS}) FROM STDIN WITH (FORMAT csv)", io.StringIO(text))
                conn.commit()
    except BaseException as exc:  # reported by the caller
        errors.append(exc)


def copy_rate(uri: str, ticks: Sequence[Tick], connections: int) -> float:
    """Ticks/s of raw COPY over ``connections`` parallel connections (ticks split evenly)."""
    _prepare(uri, ticks)
    rows = [row(t) for t in ticks]
    parts = [rows[i::connections] for i in range(connections)]
    texts = [[_csv(p[j:j + _COPY_BATCH]) for j in range(0, len(p), _COPY_BATCH)] for p in parts]
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_copy_worker, args=(uri, t, errors)) for t in texts]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return len(ticks) / elapsed


def row_by_row_rate(uri: str, ticks: Sequence[Tick]) -> float:
    """Ticks/s of one ``INSERT`` per row, committing every 100 rows (TTQuant's writer)."""
    _prepare(uri, ticks)
    rows = [row(t) for t in ticks]
    sql = f"INSERT INTO market_data ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    with contextlib.closing(psycopg2.connect(uri)) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        for i, r in enumerate(rows, 1):
            cur.execute(sql, r)
            if i % _ROWS_PER_TXN == 0:
                conn.commit()
        conn.commit()
        elapsed = time.perf_counter() - t0
    return len(ticks) / elapsed


def measure(uri: str, n_copy: int, n_rows: int) -> dict[str, Figure]:
    """Figures ``copy1_ticks_s``, ``copy2_ticks_s``, ``rowbyrow_ticks_s`` (+ the tick counts)."""
    ticks = make_ticks(n_copy, "bench-copy")
    out: dict[str, Figure] = {"copy_ticks": n_copy, "rowbyrow_ticks": min(n_rows, n_copy)}
    out["copy1_ticks_s"] = round(copy_rate(uri, ticks, 1))
    out["copy2_ticks_s"] = round(copy_rate(uri, ticks, 2))
    out["rowbyrow_ticks_s"] = round(row_by_row_rate(uri, ticks[:n_rows]))
    _prepare(uri, [])
    return out
