"""Measurement 7: read latencies on a table of many ticks, generated server-side.

Ticks: ``n`` rows over the last 5 days, 4 symbols, one exchange, via ``generate_series`` (no
Python in the loop), then ``ANALYZE``.  Also 20 strategies' trades (last 24 h) and position
snapshots, and the last day's 1-minute klines rolled up by :func:`~ttquant_tasks.ops.klines.rollup_klines`.
Each query runs once to warm the cache, then ``repeat`` times; the figure is the median (ms).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg2

from ..ops.klines import rollup_klines
from ..storage.engine import get_engine
from .report import Figure

_DAYS = 5
_GENERATE = """
INSERT INTO market_data (time, symbol, exchange, last_price, volume, exchange_time, local_time, trade_id, buyer_maker)
SELECT ts, sym, 'binance', 60000 + (g %% 1000) * 0.01, 0.001 * (1 + g %% 50),
       (extract(epoch FROM ts) * 1e9)::bigint, (extract(epoch FROM ts) * 1e9)::bigint + 1000000, g / 4, g %% 2 = 0
FROM (SELECT g, (ARRAY['BTCUSDT', 'ETHUSDT', 'SOLUSDT', 'BNBUSDT'])[1 + g %% 4] AS sym,
             %(t0)s::timestamptz + (g * %(step_us)s) * interval '1 microsecond' AS ts
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g) s
"""
_TRADES = """
INSERT INTO trades (time, trade_id, order_id, strategy_id, symbol, side, filled_price, filled_volume, trade_time,
                    status, error_code, commission)
SELECT now() - (g %% 86000) * interval '1 second', 't' || g, 'o' || g, 'strat' || (g %% 20), 'BTCUSDT',
       CASE WHEN g %% 2 = 0 THEN 'BUY' ELSE 'SELL' END, 60000 + g %% 100, 0.001,
       (extract(epoch FROM now()) * 1e9)::bigint, CASE WHEN g %% 10 = 0 THEN 'REJECTED' ELSE 'FILLED' END,
       CASE WHEN g %% 10 = 0 THEN 1001 ELSE 0 END, 0.06
FROM generate_series(1, %(n)s) g
"""
_POSITIONS = """
INSERT INTO positions (time, strategy_id, symbol, position, avg_price, unrealized_pnl, realized_pnl)
SELECT now() - g * interval '1 second', 'strat' || (g %% 20), (ARRAY['BTCUSDT', 'ETHUSDT', 'SOLUSDT'])[1 + g %% 3],
       (g %% 7) * 0.001, 60000, 0, 0
FROM generate_series(1, %(n)s) g
"""
QUERIES = {
    "query_latest_ticks_ms": "SELECT * FROM market_data WHERE symbol = 'BTCUSDT' ORDER BY time DESC LIMIT 1000",
    "query_klines_day_ms": """SELECT * FROM klines WHERE exchange = 'binance' AND symbol = 'BTCUSDT'
                              AND "interval" = '1m' AND time >= now() - interval '1 day' ORDER BY time""",
    "query_klines_from_ticks_ms": """SELECT date_trunc('minute', time) AS bar, min(last_price), max(last_price),
                              sum(volume) FROM market_data WHERE symbol = 'BTCUSDT'
                              AND time >= now() - interval '1 day' GROUP BY bar ORDER BY bar""",
    "query_latest_positions_ms": "SELECT * FROM latest_positions",
    "query_strategy_stats_ms": "SELECT * FROM strategy_stats",
}


def generate(uri: str, n: int) -> float:
    """Fill the tables (see module doc); returns seconds spent on the ticks."""
    now = datetime.now(UTC)
    t0 = now - timedelta(days=_DAYS)
    step_us = _DAYS * 86_400_000_000 // max(1, n)
    with contextlib.closing(psycopg2.connect(uri)) as conn, conn.cursor() as cur:
        day = t0.date()
        while day <= now.date():  # plain flavour partitions; no-op on TimescaleDB
            cur.execute("SELECT ttquant_ensure_day(%s)", (day,))
            day += timedelta(days=1)
        conn.commit()
        started = time.perf_counter()
        batch = 1_000_000  # one transaction per million rows keeps WAL and memory bounded
        for lo in range(0, n, batch):
            cur.execute(_GENERATE, {"t0": t0, "step_us": step_us, "lo": lo, "hi": min(n, lo + batch) - 1})
            conn.commit()
        seconds = time.perf_counter() - started
        cur.execute(_TRADES, {"n": 50_000})
        cur.execute(_POSITIONS, {"n": 100_000})
        conn.commit()
    rollup_klines(get_engine(uri), now - timedelta(days=1), now)
    with contextlib.closing(psycopg2.connect(uri)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
    return seconds


def measure(uri: str, n: int, repeat: int = 5) -> dict[str, Figure]:
    out: dict[str, Figure] = {"query_ticks": n, "query_generate_s": round(generate(uri, n), 1)}
    with contextlib.closing(psycopg2.connect(uri)) as conn, conn.cursor() as cur:
        for key, sql in QUERIES.items():
            cur.execute(sql)
            cur.fetchall()
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                cur.execute(sql)
                cur.fetchall()
                times.append((time.perf_counter() - t0) * 1000)
            out[key] = round(statistics.median(times), 2)
        conn.rollback()
    return out
