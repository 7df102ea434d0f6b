"""Measurements 3 and 8: ours end to end (sim feed at max rate -> ZMQ -> Celery -> PostgreSQL) and
CPU per persisted tick (feed process + worker processes).

Persisted ticks/s = ticks the feed produced / (time the last of them was counted in the database
- time the feed loop started).  Counting, not assuming: the phase waits until ``count(*)`` of its
exchange equals the feed's tick counter (or reports the shortfall).  CPU counts the feed
process's own ``os.times`` over ``run_feed`` and the worker's main process + pool children
(psutil) over the same span; the broker's and PostgreSQL's own CPU are reported apart
(:mod:`.servercpu`: ``pg_``, ``pg_aux_``, ``redis_cpu_us_per_tick``, None when not local) and in
``cpu_with_servers_us_per_tick``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import psycopg2

from . import procs
from .report import Figure
from .servercpu import ServerCpu


def count_rows(uri: str, exchange: str) -> int:
    with contextlib.closing(psycopg2.connect(uri, connect_timeout=5)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM market_data WHERE exchange = %s", (exchange,))
        row = cur.fetchone()
    return int(row[0]) if row else 0


def wait_count(uri: str, exchange: str, expected: int, stall_s: float, poll_s: float = 0.1) -> tuple[int, int]:
    """Poll until ``expected`` rows are stored or no progress for ``stall_s``; (count, time_ns at it)."""
    last, last_change = -1, time.monotonic()
    while True:
        n = count_rows(uri, exchange)
        now_ns = time.time_ns()
        if n >= expected:
            return n, now_ns
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return n, now_ns
        time.sleep(poll_s)


def measure(uri: str, env: dict[str, str], log_dir: Path, worker: procs.Proc, duration: float,
            symbols: list[str], exchange: str = "bench-e2e") -> dict[str, Figure]:
    servers = ServerCpu(uri, env["CELERY_BROKER_URL"])
    server0 = servers.snapshot()
    cpu0 = worker.cpu_seconds()
    config: dict[str, Any] = {"exchange": exchange, "symbols": symbols, "rate": 0, "duration": duration}
    feed = procs.run_feed_child(env, log_dir, config, timeout=duration + 60)
    n_feed = int(feed["ticks"])
    stored, t_done = wait_count(uri, exchange, n_feed, stall_s=20.0)
    worker_cpu = worker.cpu_seconds() - cpu0
    server1 = servers.snapshot()
    elapsed = (t_done - int(feed["t_start_ns"])) / 1e9
    out: dict[str, Figure] = {
        "e2e_ticks": n_feed,
        "e2e_stored": stored,
        "e2e_feed_ticks_s": round(n_feed / max(1e-9, (feed["t_end_ns"] - feed["t_start_ns"]) / 1e9)),
        "e2e_ticks_s": round(stored / elapsed) if elapsed > 0 else None,
        "e2e_seconds": round(elapsed, 3),
        "feed_cpu_us_per_tick": round(feed["cpu_s"] / max(1, stored) * 1e6, 2),
        "worker_cpu_us_per_tick": round(worker_cpu / max(1, stored) * 1e6, 2),
    }
    ours = round((feed["cpu_s"] + worker_cpu) / max(1, stored) * 1e6, 2)
    out["cpu_us_per_tick"] = ours
    out.update(ServerCpu.per_tick(server0, server1, stored))
    out["server_cpu_note"] = "; ".join(servers.problems) or None  # why a server figure is None
    server = out["server_cpu_us_per_tick"]
    out["cpu_with_servers_us_per_tick"] = round(ours + server, 2) if isinstance(server, float) else None
    return out
