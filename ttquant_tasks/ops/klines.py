"""1-minute OHLCV bars from ``market_data`` into ``klines``, on both schema flavours.

A bar's ``time`` is the UTC minute it opens; open/close are the prices of the lowest/highest
``trade_id`` of the minute (trade ids increase per symbol, timestamps can tie), high/low the
extremes, volume the exact NUMERIC sum of quantities.  Idempotent: bars are upserted on
(exchange, symbol, interval, time), and a bar whose values did not change is not rewritten, so a
re-run over the same minutes changes nothing; a minute that gained trades since (late or backfilled
ticks) is corrected.

TimescaleDB: the bars come from the continuous aggregate ``klines_1m_cagg`` (sql/006, real-time,
refreshed by its own policy) instead of a scan of ``market_data``; ``klines`` stays the table that
existing TTQuant tools read, kept in step by this same upsert.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from ..errors import ConfigError
from ..storage.engine import db_errors

INTERVALS = {"1m": timedelta(minutes=1)}

# date_trunc(…, 'UTC'): minutes of UTC whatever the session TimeZone (some historical zones have
# offsets with seconds, which would shift bars).  ORDER BY in the insert: concurrent rollups over
# overlapping ranges take key locks in the same order instead of deadlocking.
_ROLLUP = sa.text("""
INSERT INTO klines (time, symbol, exchange, "interval", open, high, low, close, volume)
SELECT date_trunc('minute', time, 'UTC') AS bar, symbol, exchange, :interval,
       (array_agg(last_price ORDER BY trade_id ASC))[1],
       max(last_price), min(last_price),
       (array_agg(last_price ORDER BY trade_id DESC))[1],
       sum(volume)
FROM market_data
WHERE time >= :lo AND time < :hi
GROUP BY bar, symbol, exchange
ORDER BY exchange, symbol, bar
ON CONFLICT (exchange, symbol, "interval", time) DO UPDATE
SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume
WHERE (klines.open, klines.high, klines.low, klines.close, klines.volume)
      IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)
""")


_ROLLUP_CAGG = sa.text("""
INSERT INTO klines (time, symbol, exchange, "interval", open, high, low, close, volume)
SELECT bucket, symbol, exchange, :interval, open, high, low, close, volume
FROM klines_1m_cagg
WHERE bucket >= :lo AND bucket < :hi
ORDER BY exchange, symbol, bucket
ON CONFLICT (exchange, symbol, "interval", time) DO UPDATE
SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume
WHERE (klines.open, klines.high, klines.low, klines.close, klines.volume)
      IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)
""")


def minute_range(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """``[since, until)`` widened to whole UTC minutes: since rounded down, until rounded up.

    Both must be timezone-aware; ``until`` after ``since``.
    """
    for key, value in (("since", since), ("until", until)):
        if value.tzinfo is None:
            raise ConfigError(key, f"must be timezone-aware (UTC), got naive {value.isoformat()}")
    if until <= since:
        raise ConfigError("until", f"must be after since ({since.isoformat()}), got {until.isoformat()}")
    lo = since.astimezone(UTC).replace(second=0, microsecond=0)
    hi = until.astimezone(UTC).replace(second=0, microsecond=0)
    if hi < until:
        hi += timedelta(minutes=1)
    return lo, hi


def rollup_klines(engine: sa.Engine, since: datetime, until: datetime, interval: str = "1m") -> int:
    """Write the ``interval`` bars of the minutes touching ``[since, until)``; returns bars new or changed.

    Bars of minutes still in progress are written as they stand and corrected by the next run.
    Raises :class:`~ttquant_tasks.errors.ConfigError` for an unknown interval or bad times and
    :class:`~ttquant_tasks.errors.DatabaseUnavailable` when the database cannot be reached.
    """
    if interval not in INTERVALS:
        raise ConfigError("interval", f"supported: {', '.join(INTERVALS)}; got {interval!r}")
    lo, hi = minute_range(since, until)
    from ..storage.migrate import flavour

    with db_errors("rollup_klines"), engine.begin() as conn:
        query = _ROLLUP_CAGG if flavour(conn) == "timescale" else _ROLLUP
        return int(conn.execute(query, {"interval": interval, "lo": lo, "hi": hi}).rowcount)
