"""Operational figures into the ``metrics`` table (``time, component, metric_name, value``).

Rows written by :func:`record_figures` (``time`` = the database's ``now()``, UTC):

=========================  ===============  ==============================================
component                  metric_name      value
=========================  ===============  ==============================================
``db``                     ``ticks_per_s``  market_data rows received (local_time) in the
                                            last ``window_s`` seconds, per second
``broker``                 ``depth.QUEUE``  messages ready in QUEUE (ticks, orders, ...)
``broker``                 ``parked``       messages in ``parked``
``feed.SYMBOL``            ``lag_s``        seconds since the newest stored tick of SYMBOL
=========================  ===============  ==============================================

A queue that could not be asked (None) or a symbol without ticks gets no row.  The periodic jobs
also write ``job.NAME`` rows (see :func:`record`): ``run_s`` (time = start, value = seconds),
``skipped`` (another process held the job's lock) and ``job_failed``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime

import sqlalchemy as sa

from ..storage.engine import db_errors

Row = tuple[str, str, float]

_LAG = sa.text("""
SELECT s.symbol, extract(epoch FROM now() - px.time)::float8
FROM unnest(CAST(:symbols AS text[])) AS s(symbol)
CROSS JOIN LATERAL (
    SELECT md.time FROM market_data md WHERE md.symbol = s.symbol AND md.exchange = :exchange
    ORDER BY md.time DESC LIMIT 1
) px
""")

_RATE = sa.text("""
SELECT count(*) FROM market_data
WHERE exchange = :exchange AND time >= now() - make_interval(secs => :window + 3600) AND local_time >= :since_ns
""")

_INSERT = sa.text("INSERT INTO metrics (time, component, metric_name, value) "
                  "VALUES (coalesce(CAST(:time AS timestamptz), now()), :component, :metric_name, :value)")


def figure_rows(ticks: int, window_s: float, depths: Mapping[str, int | None], lags: Mapping[str, float]) -> list[Row]:
    """The rows for one measurement (pure): see the module table."""
    rows: list[Row] = [("db", "ticks_per_s", ticks / window_s)]
    for name, depth in depths.items():
        if depth is None:
            continue
        rows.append(("broker", "parked" if name == "parked" else f"depth.{name}", float(depth)))
    rows.extend((f"feed.{symbol}", "lag_s", float(lag)) for symbol, lag in lags.items())
    return rows


def record(engine: sa.Engine, rows: Iterable[Row], at: datetime | None = None) -> int:
    """Insert ``rows`` at ``at`` (aware), else at the database's now(); returns how many."""
    params = [{"time": at, "component": c, "metric_name": m, "value": v} for c, m, v in rows]
    if not params:
        return 0
    with db_errors("record metrics"), engine.begin() as conn:
        conn.execute(_INSERT, params)
    return len(params)


def ticks_received(engine: sa.Engine, exchange: str, window_s: float) -> int:
    """market_data rows of ``exchange`` received (``local_time``) in the last ``window_s`` seconds."""
    since_ns = time.time_ns() - int(window_s * 1e9)
    with db_errors("ticks_received"), engine.connect() as conn:
        return int(conn.execute(_RATE, {"exchange": exchange, "window": window_s, "since_ns": since_ns}).scalar_one())


def symbol_lags(engine: sa.Engine, exchange: str, symbols: Iterable[str]) -> dict[str, float]:
    """Seconds since the newest stored tick (its exchange time) per symbol; symbols without ticks absent."""
    with db_errors("symbol_lags"), engine.connect() as conn:
        return {str(s): float(v) for s, v in conn.execute(_LAG, {"symbols": list(symbols), "exchange": exchange})}


def record_figures(engine: sa.Engine, exchange: str, symbols: Iterable[str], window_s: float,
                   depths: Mapping[str, int | None]) -> list[Row]:
    """Measure ticks/s and per-symbol lag, add the queue ``depths`` (asked by the caller), write them.

    Returns the rows written.  Raises :class:`~ttquant_tasks.errors.DatabaseUnavailable` when the
    database cannot be reached.
    """
    rows = figure_rows(ticks_received(engine, exchange, window_s), window_s, depths,
                       symbol_lags(engine, exchange, symbols))
    record(engine, rows)
    return rows
