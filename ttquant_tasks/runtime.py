"""Entry points that wire the pieces of a process together (feed process)."""

from __future__ import annotations

import logging
from typing import Any

from .settings import Settings

log = logging.getLogger(__name__)


def feed_start_ids(settings: Settings, exchange: str) -> dict[str, int]:
    """Newest stored trade id per symbol of ``exchange`` ({} when the database does not answer).

    The sim source continues after these ids, so restarts keep trade ids consecutive.
    """
    from .storage.engine import get_engine
    from .storage.queries import last_trade_ids

    try:
        return last_trade_ids(get_engine(settings.db_uri), exchange, settings.symbols)
    except Exception as exc:  # the feed must start even with the database down
        log.warning("cannot read last trade ids (%s); sim ids start at 1", exc)
        return {}


def run_feed_command(settings: Settings, *, source: str, rate: float, exchange: str | None,
                     duration: float | None) -> int:
    """``ttquant feed``: run the sim feed until SIGTERM/SIGINT or ``duration``; exit 0."""
    from .feed.runner import run_feed
    from .feed.sim import SimSource
    from .tasks.app import make_app
    from .tasks.publisher import ChunkPublisher

    if source != "sim":  # pragma: no cover - argparse restricts it
        raise ValueError(f"unknown source {source!r}")
    exchange = exchange or "sim"
    app = make_app(settings)
    publisher = ChunkPublisher(app, timeout=settings.publish_timeout)
    start_ids = feed_start_ids(settings, exchange)
    sim = SimSource(settings.symbols, rate=rate, exchange=exchange, start_ids=start_ids)
    stats: dict[str, Any] = run_feed(settings, sim, publish=publisher, duration=duration,
                                     stats_path=settings.home / "run" / "feed.json")
    publisher.close()
    log.info("feed stopped: %s", stats)
    return 0
