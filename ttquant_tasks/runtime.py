"""Entry points that wire the pieces of a process together (feed process)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .feed.stats import read_stats
from .models import Tick
from .settings import Settings

if TYPE_CHECKING:
    from .feed.confirm import Confirmer

log = logging.getLogger(__name__)

SOURCES = ("binance", "sim", "replay")


def feed_start_ids(settings: Settings, exchange: str) -> dict[str, int]:
    """Last trade id per symbol of ``exchange`` the sim must continue after.

    The newest of: the stored ids, the last ids the previous run handled (``last_ids`` in the
    feed's stats file, written every second and at stop), and the ids still in the spool.  Chunks
    of the previous run may still sit in the broker or the spool and the database may be down at
    start, so the database alone could make a restart repeat ids that are on their way.
    """
    from .storage.engine import get_engine
    from .storage.queries import last_trade_ids

    ids: dict[str, int] = {}
    try:
        ids = last_trade_ids(get_engine(settings.db_uri), exchange, settings.symbols)
    except Exception as exc:  # the feed must start even with the database down
        log.warning("cannot read last trade ids from the database (%s)", exc)
    counts = (read_stats(settings.feed_stats_path) or {}).get("counts", {})
    recorded = counts.get("last_ids", {}) if counts.get("exchange") == exchange else {}
    for symbol, last in [*recorded.items(), *_spooled_ids(settings, exchange).items()]:
        if isinstance(last, int) and last > ids.get(symbol, 0):
            ids[symbol] = last
    return ids


def _spooled_ids(settings: Settings, exchange: str) -> dict[str, int]:
    """Newest trade id per symbol in chunks still waiting in the spool (they replay after start)."""
    import json

    newest: dict[str, int] = {}
    for path in sorted(settings.spool_dir.glob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(payload, dict) or payload.get("exchange") != exchange:
            continue
        for symbol, trade_id in zip(payload.get("symbol", []), payload.get("trade_id", []), strict=False):
            if isinstance(trade_id, int) and trade_id > newest.get(symbol, 0):
                newest[symbol] = trade_id
    return newest


def build_source(settings: Settings, source: str, *, rate: float = 0.0, exchange: str | None = None,
                 file: Path | None = None, speed: float | None = None) -> Iterable[Tick]:
    """The tick source named ``source``: ``binance`` (live, backfilled), ``sim`` or ``replay`` (``file``).

    ``exchange`` names sim ticks only: Binance ticks (live or replayed) are always ``binance``.
    ``speed`` paces a replay (None: as fast as possible).  Raises ``ValueError`` naming a bad option.
    """
    if source == "sim":
        from .feed.sim import SimSource

        exchange = exchange or "sim"
        return SimSource(settings.symbols, rate=rate, exchange=exchange, start_ids=feed_start_ids(settings, exchange))
    if exchange not in (None, "binance"):
        log.warning("--exchange %s ignored: %s ticks are stored as exchange 'binance'", exchange, source)
    if source == "binance":
        from .feed.live import LiveBinance
        from .storage.engine import get_engine

        return LiveBinance(settings, settings.symbols, get_engine(settings.db_uri))
    if source == "replay":
        from .feed.playback import Playback

        if file is None:
            raise ValueError("--source replay needs a recording: ttquant feed --source replay FILE")
        return Playback(file, speed)
    raise ValueError(f"unknown source {source!r} (expected one of {', '.join(SOURCES)})")


def make_confirmer(settings: Settings, app: Any, publish: Callable[[dict[str, Any]], None], *,
                   records: bool = False) -> Confirmer | None:
    """``publish`` wrapped in an end-to-end :class:`~.feed.confirm.Confirmer`; None when
    ``TTQUANT_RESEND_AFTER`` is 0.  ``records``: the gateway's records (``orders`` queue, outbox
    ``$TTQUANT_HOME/gateway-outbox``) instead of the feed's tick chunks (``ticks``, ``feed-outbox``).
    """
    from .feed.confirm import Confirmer, Outbox, tick_keys
    from .storage.engine import get_engine
    from .storage.receipts import record_key, stored_records, stored_ticks
    from .tasks.app import ORDERS, PARKED, TICKS
    from .tasks.parking import queue_depths

    if not settings.resend_after:
        return None
    uri = settings.db_uri
    work = ORDERS if records else TICKS
    stored = stored_records if records else stored_ticks

    def backlog() -> int | None:
        depths = queue_depths(app, (work, PARKED))
        return None if None in depths.values() else sum(v or 0 for v in depths.values())

    check_after = 2 * settings.chunk_age + 2.0
    return Confirmer(publish, keys=record_key if records else tick_keys,
                     stored=lambda keys: stored(get_engine(uri), keys), backlog=backlog,
                     outbox=Outbox(settings.home / ("gateway-outbox" if records else "feed-outbox")),
                     check_after=check_after, resend_after=max(settings.resend_after, check_after),
                     name="ttquant-gateway-confirmer" if records else "ttquant-confirmer")


def run_feed_command(settings: Settings, *, source: str, rate: float, exchange: str | None,
                     duration: float | None, file: Path | None = None, speed: float | None = None) -> int:
    """``ttquant feed``: run the feed on ``source`` until SIGTERM/SIGINT, ``duration`` or the replay's end; exit 0."""
    from .feed.runner import run_feed
    from .tasks.app import make_app
    from .tasks.publisher import ChunkPublisher

    ticks = build_source(settings, source, rate=rate, exchange=exchange, file=file, speed=speed)
    app = make_app(settings)
    publisher = ChunkPublisher(app, timeout=settings.publish_timeout)
    confirmer = make_confirmer(settings, app, publisher)
    try:
        stats: dict[str, Any] = run_feed(settings, ticks, publish=confirmer or publisher, duration=duration,
                                         stats_path=settings.feed_stats_path,
                                         extra_stats=confirmer.stats if confirmer else None)
    finally:
        if confirmer is not None:
            confirmer.close()
        publisher.close()
    log.info("feed stopped: %s", stats)
    return 0


def run_record_command(settings: Settings, path: Path, *, duration: float | None) -> int:
    """``ttquant record FILE``: append the live stream's raw frames to ``path`` until SIGTERM/SIGINT/``duration``.

    No database, no broker: frames only (JSON lines, gzip when ``path`` ends in ``.gz``), each with
    its receive time in ns (UTC).  Replay them with ``ttquant feed --source replay FILE``.
    """
    import signal
    import threading

    from .feed.live import make_source
    from .feed.record import Recorder

    with Recorder(path) as recorder:
        source = make_source(settings, settings.symbols, recorder=recorder)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: source.close())
        timer = threading.Timer(duration, source.close) if duration else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        ticks = 0
        log.info("record: %s -> %s", source.url, path)
        for _ in source:  # frames are written as they are processed; ticks are only counted
            ticks += 1
        if timer is not None:
            timer.cancel()
        recorder.flush()
    log.info("record: stopped after %d ticks: %s", ticks, dict(source.counters))
    return 0
