"""``ttquant status``: one screen of figures (row counts, queue depths, parked chunks, feed)."""

from __future__ import annotations

import time
from typing import Any

from .settings import Settings, mask_url


def collect(settings: Settings) -> dict[str, Any]:
    """Gather the figures; each part reports its own error instead of failing the whole screen."""
    report: dict[str, Any] = {"database": mask_url(settings.read_uri), "broker": mask_url(settings.broker_url)}
    try:
        from .storage.engine import get_engine
        from .storage.queries import db_size, table_counts

        engine = get_engine(settings.read_uri)
        report["rows"] = table_counts(engine)
        report["db_size_bytes"] = db_size(engine)
    except Exception as exc:
        report["rows_error"] = f"{type(exc).__name__}: {exc}"
    try:
        from .tasks.app import make_app
        from .tasks.parking import queue_depths

        report["queues"] = queue_depths(make_app(settings), ("ticks", "orders", "maintenance", "parked"))
    except Exception as exc:
        report["queues_error"] = f"{type(exc).__name__}: {exc}"
    from .feed.stats import read_stats

    report["feed"] = read_stats(settings.home / "run" / "feed.json")
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"database  {report['database']}", f"broker    {report['broker']}"]
    if "rows" in report:
        lines.append("rows      " + "  ".join(f"{k}={v}" for k, v in report["rows"].items()))
        lines.append(f"db size   {report['db_size_bytes'] / 1e6:.1f} MB")
    else:
        lines.append(f"rows      unavailable: {report.get('rows_error')}")
    if "queues" in report:
        lines.append("queues    " + "  ".join(f"{k}={v}" for k, v in report["queues"].items()))
    else:
        lines.append(f"queues    unavailable: {report.get('queues_error')}")
    feed = report.get("feed")
    if feed:
        age = time.time() - float(feed.get("time", 0))
        counts = feed.get("counts", {})
        rates = feed.get("rates_per_s", {})
        lines.append(f"feed      pid {feed.get('pid')}, updated {age:.0f}s ago: {counts.get('ticks', 0)} ticks"
                     f" ({rates.get('ticks', 0):.0f}/s), {counts.get('published', 0)} chunks enqueued,"
                     f" {counts.get('spool_chunks', 0)} spooled, {counts.get('lost', 0)} lost")
    return "\n".join(lines)
