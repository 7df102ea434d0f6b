"""``ttquant status``: one screen for an operator at 3 a.m.

Shows services (database, broker, embedded ones), workers (``celery inspect ping``, short
timeout), queue depths and parked chunks, ticks/s in (the feed's own figures) and out (rows
stored), the gateway's orders, fills and records (its own figures), lag per symbol, the newest
backup and its age, the database size and estimated rows.  Database queries go to
``DB_READ_URI`` when set (a replica), else ``DB_URI``.  Each part reports its own error instead
of failing the whole screen; nothing here starts a service.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from .settings import Settings, mask_url

RATE_WINDOW_S = 60.0
"""Ticks/s out are averaged over the last minute of stored rows (by receive time)."""
PING_TIMEOUT_S = 1.0

# Planner estimates (pg_class.reltuples) of a table and its partitions / TimescaleDB chunks: an
# exact count(*) of months of ticks would take minutes.  -1 (never analyzed) counts as 0.
_ESTIMATES = """
SELECT p.relname, sum(greatest(c.reltuples, 0))::bigint
FROM pg_class p
JOIN pg_class c ON c.oid = p.oid OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = p.oid)
WHERE p.relname = ANY(:names) AND p.relnamespace = current_schema()::regnamespace
GROUP BY p.relname
"""


def _part(report: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
    try:
        report[key] = fn()
    except Exception as exc:
        report[f"{key}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _database(settings: Settings, exchange: str) -> dict[str, Any]:
    import sqlalchemy as sa

    from .ops.metrics import symbol_lags, ticks_received
    from .storage import schema
    from .storage.engine import get_engine
    from .storage.queries import db_size

    engine = get_engine(settings.read_uri)
    with engine.connect() as conn:
        rows = {str(n): int(v) for n, v in conn.execute(sa.text(_ESTIMATES), {"names": list(schema.TABLES)})}
    return {
        "size_bytes": db_size(engine),
        "rows_estimate": rows,
        "ticks_out_per_s": ticks_received(engine, exchange, RATE_WINDOW_S) / RATE_WINDOW_S,
        "lag_s": symbol_lags(engine, exchange, settings.symbols),
    }


def _broker(settings: Settings) -> dict[str, Any]:
    from .tasks.app import PARKED, WORK_QUEUES, make_app
    from .tasks.parking import queue_depths

    app = make_app(settings)
    depths = queue_depths(app, (*WORK_QUEUES, PARKED))
    replies = app.control.ping(timeout=PING_TIMEOUT_S) or []
    workers = sorted(name for reply in replies for name in reply)
    return {"queues": {q: d for q, d in depths.items() if q != PARKED}, "parked": depths[PARKED], "workers": workers}


def _backup(settings: Settings) -> dict[str, Any] | None:
    from .ops.backup import latest_backup

    newest = latest_backup(settings.backups_path)
    if newest is None:
        return None
    path, age = newest
    return {"path": str(path), "age_s": round(age), "size_bytes": path.stat().st_size}


def _services(settings: Settings) -> dict[str, Any]:
    from .services import status_all

    return {name: {"running": bool(s.get("running")), "url": mask_url(s.get("url"))}
            for name, s in status_all(settings.home).items()}


def collect(settings: Settings) -> dict[str, Any]:
    """Gather the figures of the screen (``settings`` resolved: database and broker known)."""
    from .feed.stats import read_stats

    report: dict[str, Any] = {"time": time.time(), "database": mask_url(settings.read_uri),
                              "broker": mask_url(settings.broker_url)}
    report["feed"] = feed = read_stats(settings.feed_stats_path)
    report["gateway"] = read_stats(settings.gateway_stats_path)
    # The exchange the running feed stores (``ttquant up --source sim`` stores ``sim``), else EXCHANGE.
    exchange = (feed or {}).get("counts", {}).get("exchange") or settings.exchange
    _part(report, "embedded", lambda: _services(settings))
    _part(report, "db", lambda: _database(settings, str(exchange)))
    _part(report, "celery", lambda: _broker(settings))
    _part(report, "backup", lambda: _backup(settings))
    return report


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def render(report: dict[str, Any]) -> str:
    """The screen for ``report`` (pure)."""
    def err(key: str) -> str:
        return f"unavailable: {report.get(key + '_error')}"

    lines = [f"database  {report['database']}", f"broker    {report['broker']}"]
    emb = report.get("embedded") or {}
    running = [n for n, s in emb.items() if s["running"]]
    if running:
        lines.append("embedded  " + ", ".join(f"{n} running" for n in running))
    celery = report.get("celery")
    if celery is not None:
        workers = celery["workers"]
        lines.append(f"workers   {len(workers)}: {', '.join(workers)}" if workers else "workers   none answered")
        lines.append("queues    " + "  ".join(f"{k}={'?' if v is None else v}" for k, v in celery["queues"].items())
                     + f"   parked={'?' if celery['parked'] is None else celery['parked']}")
    else:
        lines.append(f"celery    {err('celery')}")
    feed = report.get("feed")
    db = report.get("db")
    ticks_in = "?"
    if feed:
        ticks_in = f"{feed.get('rates_per_s', {}).get('ticks', 0):.0f}"
        age = report["time"] - float(feed.get("time", 0))
        counts = feed.get("counts", {})
        lines.append(f"feed      pid {feed.get('pid')}, updated {_age(age)} ago: {counts.get('ticks', 0)} ticks, "
                     f"{counts.get('published', 0)} chunks enqueued, {counts.get('spool_chunks', 0)} spooled, "
                     f"{counts.get('lost', 0)} lost")
        confirm = counts.get("confirm")
        if isinstance(confirm, dict):
            lines.append(f"confirm   {confirm.get('pending', 0)} chunks awaiting their rows, "
                         f"{confirm.get('resent', 0)} resent, {confirm.get('given_up', 0)} given up")
    gateway = report.get("gateway")
    if gateway:
        age = report["time"] - float(gateway.get("time", 0))
        c = gateway.get("counts", {})
        state = "stopped" if c.get("stopped") else f"pid {gateway.get('pid')}"
        journal = "ok" if c.get("journal_healthy", True) else "FAILING (orders refused)"
        lines.append(f"gateway   {state}, updated {_age(age)} ago: {c.get('orders', 0)} orders, "
                     f"{c.get('filled', 0)} filled, {c.get('rejected', 0)} rejected, "
                     f"{c.get('malformed', 0)} malformed; records {c.get('enqueue_published', 0)} enqueued, "
                     f"{c.get('enqueue_spool_chunks', 0)} spooled, {c.get('enqueue_lost', 0)} lost; journal {journal}")
    if db is not None:
        lines.append(f"ticks/s   in {ticks_in}  out {db['ticks_out_per_s']:.1f}")
        lags = db["lag_s"]
        lines.append("lag       " + ("  ".join(f"{s}={_age(v)}" for s, v in lags.items()) if lags else "no ticks yet"))
        lines.append(f"db size   {db['size_bytes'] / 1e6:.1f} MB   rows ~ "
                     + "  ".join(f"{k}={v}" for k, v in db["rows_estimate"].items()))
    else:
        lines.append(f"db        {err('db')}")
    bk = report.get("backup")
    if bk:
        lines.append(f"backup    {bk['path']} ({bk['size_bytes'] / 1e6:.1f} MB), {_age(bk['age_s'])} old")
    elif "backup_error" in report:
        lines.append(f"backup    {err('backup')}")
    else:
        lines.append("backup    none yet")
    return "\n".join(lines)


def show(settings: Settings, as_json: bool = False, watch: float | None = None) -> int:
    """Print the screen once, or every ``watch`` seconds until Ctrl-C (terminal cleared each time)."""
    while True:
        report = collect(settings)
        text = json.dumps(report, indent=2, default=str) if as_json else render(report)
        if watch is not None and sys.stdout.isatty():
            text = "\x1b[H\x1b[2J" + text
        print(text, flush=True)
        if watch is None:
            return 0
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return 0
