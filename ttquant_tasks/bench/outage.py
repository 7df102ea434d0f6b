"""Measurement 9: a database outage while the feed runs at a set rate, then recovery.

The worker reaches PostgreSQL through a :class:`.gate.Gate`; the phase cuts it ``down`` seconds
after the feed starts and restores it.  Everything is counted in the database afterwards:

* ``outage_drain_s``: from the moment the database is back until every tick received before that
  moment (``local_time <= T_up``) is stored, with no operator action.  None when that never
  happened within the wait (chunks parked after their retry budget need ``ttquant flush``);
* ``outage_drain_with_flush_s``: the same, when the bench had to run the flush (what an operator
  does with ``ttquant flush``) after the stall; None when no flush was needed;
* ``outage_lost_rows``: ticks the feed produced minus distinct (symbol, trade_id) stored at the end;
* ``outage_duplicate_rows``: stored rows minus distinct (symbol, trade_id).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import psycopg2

from ..settings import Settings
from . import procs
from .gate import Gate
from .report import Figure

EXCHANGE = "bench-outage"


def _counts(uri: str, t_up_ns: int, distinct: bool = True) -> tuple[int, int, int | None]:
    """(rows with local_time <= t_up, rows, distinct (symbol, trade_id)) of the outage exchange.

    ``distinct=False`` (None in its place) while the backlog drains: the DISTINCT over ~375k rows
    costs PostgreSQL about a second of CPU per call here, which slowed the very drain it timed
    (one of the 2 cores, polled every 0.25 s).
    """
    unique = "count(DISTINCT (symbol, trade_id))" if distinct else "NULL"
    sql = f"""SELECT count(*) FILTER (WHERE local_time <= %s), count(*), {unique}
              FROM market_data WHERE exchange = %s"""
    with contextlib.closing(psycopg2.connect(uri, connect_timeout=5)) as conn, conn.cursor() as cur:
        cur.execute(sql, (t_up_ns, EXCHANGE))
        row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), None if row[2] is None else int(row[2])


def _parked(settings: Settings) -> int | None:
    """Messages left in ``parked``; None when the broker cannot tell (never reported as 0)."""
    from ..tasks.app import make_app
    from ..tasks.parking import queue_depths

    depth = queue_depths(make_app(settings), ("parked",)).get("parked")
    return None if depth is None else int(depth)


def _flush(settings: Settings) -> dict[str, Any]:
    from ..tasks.app import make_app
    from ..tasks.parking import flush

    return flush(make_app(settings))


def measure(uri: str, env: dict[str, str], log_dir: Path, gate: Gate, settings: Settings, rate: float,
            pre: float, down: float, post: float, symbols: list[str], max_wait: float,
            tick_workers: int | None = None) -> dict[str, Figure]:
    """``settings``: direct DB and private broker of the run (for flush / parked depth);
    ``tick_workers``: the ticks worker's children, reported as ``outage_tick_workers``."""
    duration = pre + down + post
    feed_proc = procs.start_feed_child(env, log_dir, {"exchange": EXCHANGE, "symbols": symbols, "rate": rate,
                                                      "duration": duration})
    time.sleep(pre + 1.0)  # ~1 s: the child's imports before its loop starts
    gate.down()
    time.sleep(down)
    gate.up()
    t_up = time.time_ns()
    timeline: list[tuple[int, int]] = []
    feed: dict[str, Any] | None = None
    last_total, last_change = -1, time.monotonic()
    deadline = time.monotonic() + max_wait
    flushed_at: int | None = None
    flush_result: dict[str, Any] = {}
    while time.monotonic() < deadline:
        le_up, total, _ = _counts(uri, t_up, distinct=False)
        timeline.append((time.time_ns(), le_up))
        if feed is None and feed_proc.poll() is not None:
            feed = procs.feed_result(feed_proc, timeout=10)
        if feed is not None and total >= int(feed["ticks"]):
            break
        if total != last_total:
            last_total, last_change = total, time.monotonic()
        elif feed is not None and time.monotonic() - last_change > 15.0 and flushed_at is None:
            flushed_at = time.time_ns()  # stalled: parked chunks wait for an operator's flush
            flush_result = _flush(settings)
            last_change = time.monotonic()
        time.sleep(0.25)
    if feed is None:
        feed = procs.feed_result(feed_proc, timeout=duration + 60)
    target, total, distinct = _counts(uri, t_up)
    assert distinct is not None
    reached = next((t for t, n in timeline if n >= target), None)
    drain = None if reached is None else round((reached - t_up) / 1e9, 2)
    before_flush = drain if (flushed_at is None or (reached is not None and reached < flushed_at)) else None
    return {
        "outage_rate_set": rate,
        "outage_down_s": down,
        "outage_tick_workers": tick_workers,
        "outage_feed_ticks": int(feed["ticks"]),
        "outage_feed_spooled_chunks": feed.get("spooled"),
        "outage_drain_s": before_flush,
        "outage_drain_with_flush_s": drain if flushed_at is not None else None,
        "outage_flushed_chunks": flush_result.get("moved") if flush_result else 0,
        "outage_parked_left": _parked(settings),
        "outage_stored_rows": total,
        "outage_lost_rows": int(feed["ticks"]) - distinct,
        "outage_duplicate_rows": total - distinct,
    }
