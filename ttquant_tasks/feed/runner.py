"""The feed's receive loop: ticks -> ZeroMQ PUB (best effort) + chunks -> :class:`Enqueuer` (persisted).

Threads, and why:

* a *pump* thread iterates a source that may block (a websocket ``recv``) and hands ticks over a
  bounded queue.  A source that never blocks for longer than the loop's tick wait (a sim at >= 20
  ticks/s or unpaced: its pacing sleeps are shorter) is iterated by the loop itself instead: the
  pump's GIL hand-offs were the biggest cause of the hot path's p99 (bench, docs/benchmarks.md);
* the *calling* thread runs the loop: ZMQ send, chunking, and every ~50 ms a check for chunks whose
  age has expired, which must go out even when no tick arrives;
* the *enqueuer* thread is the only one that calls the broker.

On SIGTERM/SIGINT (handlers installed when called on the main thread), on ``stop`` or after
``duration`` seconds the loop stops reading, processes the ticks already handed over, flushes the
chunker and closes the enqueuer (queued chunks go to the broker or the spool), all well within
honcho's 5 s kill wait.
"""

from __future__ import annotations

import inspect
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from ..bus.zmq import MarketDataPublisher
from ..models import Tick
from ..settings import Settings
from .batching import PayloadChunker
from .enqueuer import Enqueuer
from .spool import Spool, SpoolError
from .stats import StatsFile

log = logging.getLogger(__name__)

_TICK_WAIT = 0.05  # s: longest the loop waits for a tick before checking chunk ages and stop
_PUMP_QUEUE_MAX = 10_000  # ticks buffered between the source and the loop
_CLOSE_TIMEOUT = 3.0  # s: for the enqueuer on shutdown (honcho kills after 5 s)
_SOURCE_CLOSE_TIMEOUT = 1.0  # s: for the source to stop after close()
_END = object()


class _Pump(threading.Thread):
    """Iterates ``source`` into a bounded queue; ends with ``_END`` or the exception it raised."""

    def __init__(self, source: Iterable[Tick], stop: threading.Event) -> None:
        super().__init__(name="ttquant-feed-source", daemon=True)
        self.source = source
        self.stop = stop
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=_PUMP_QUEUE_MAX)

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_TICK_WAIT)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            for tick in self.source:
                # A tick read after stop is dropped before anyone saw it: as if never received.
                if not self._put(tick):
                    return
        except BaseException as exc:  # handed to the loop, which re-raises it after a clean flush
            self._put(exc)
            return
        self._put(_END)


class _Feed:
    """State of one run: publisher, chunker, enqueuer, counters."""

    def __init__(self, settings: Settings, publisher: MarketDataPublisher, enqueuer: Enqueuer,
                 extra_stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.publisher = publisher
        self.enqueuer = enqueuer
        self.extra_stats = extra_stats
        self.chunker = PayloadChunker(settings.chunk_size, settings.chunk_age)
        self.exchange: str | None = None
        self.chunks = 0
        # Newest trade id handed to the enqueuer per symbol (the stats file adds the pending chunk's):
        # a restarted sim continues after it.  Kept per chunk, not per tick (hot path).
        self._last_ids: dict[str, int] = {}

    @property
    def ticks(self) -> int:
        """Ticks handled: each was sent on ZMQ or counted dropped there."""
        return self.publisher.sent + self.publisher.dropped

    @property
    def last_ids(self) -> dict[str, int]:
        """Newest trade id handled per symbol."""
        out = dict(self._last_ids)
        out.update((t.symbol, t.trade_id) for t in self.chunker.pending())
        return out

    def on_tick(self, tick: Tick, now: float) -> None:
        self.publisher.send(tick)
        if tick.exchange != self.exchange:
            self.submit(self.chunker.drain())  # a chunk holds one exchange
            self.exchange = tick.exchange
        payload = self.chunker.add(tick, now)
        if payload is not None:  # once per chunk: no call per tick
            self.submit(payload)

    def submit(self, payload: dict[str, Any] | None) -> None:
        if payload is not None:
            self.chunks += 1
            self._last_ids.update(zip(payload["symbol"], payload["trade_id"], strict=True))  # later ids win
            self.enqueuer.submit(payload)

    def counts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ticks": self.ticks, "chunks": self.chunks, "exchange": self.exchange,
                               "last_ids": self.last_ids, "zmq_sent": self.publisher.sent,
                               "zmq_dropped": self.publisher.dropped, "pending": len(self.chunker)}
        out.update(self.enqueuer.stats())
        if self.extra_stats is not None:
            out["confirm"] = self.extra_stats()
        return out


def _inline(source: Iterable[Tick]) -> bool:
    """True when the loop may iterate ``source`` itself: it never blocks longer than ``_TICK_WAIT``.

    A source says so with a ``max_block_s`` attribute (seconds, None: may block indefinitely).  So
    far only the sim has one: unpaced it never sleeps; paced at ``rate`` it sleeps at most about
    ``1 / rate`` (or its 5 ms batch), which must stay below the tick wait so that aged chunks and
    ``stop`` are still looked at in time.  Wrappers forward it.
    """
    max_block_s = getattr(source, "max_block_s", None)
    return isinstance(max_block_s, int | float) and max_block_s <= _TICK_WAIT


def _run_inline(source: Iterable[Tick], feed: _Feed, stop: threading.Event, deadline: float | None,
                stats: StatsFile | None) -> BaseException | None:
    """The loop for a non-blocking source: no pump thread, no queue.  Returns the source's exception."""
    clock = time.monotonic
    chunker = feed.chunker
    on_tick = feed.on_tick
    it = iter(source)
    while not stop.is_set():
        try:
            tick = next(it)
        except StopIteration:
            return None
        except BaseException as exc:  # re-raised by run_feed after a clean flush
            return exc
        now = clock()
        on_tick(tick, now)
        if chunker._n and now - chunker._since >= chunker.age_s:  # inlined PayloadChunker.due: per tick
            feed.submit(chunker.drain())
        if deadline is not None and now >= deadline:
            return None
        if stats and stats.due(now):
            stats.update(feed.counts(), now)
    return None


def _close_inline(source: Iterable[Tick]) -> None:
    """Close a source the loop iterated itself (no other thread is inside it), if it has ``close``."""
    close = getattr(source, "close", None)
    if callable(close) and not inspect.isgenerator(source):
        try:
            close()
        except Exception:  # noqa: BLE001 - a failing close must not keep the chunks from flushing
            log.exception("feed: closing the source failed")


def _close_source(source: Iterable[Tick], pump: _Pump) -> None:
    """Stop a source that blocks (a websocket waiting for frames never returns to the pump by itself).

    Generators are skipped: closing one that another thread is running raises.  The pump gets a
    short join so the source's own cleanup (closing sockets, recording pending gaps) can finish.
    """
    close = getattr(source, "close", None)
    if callable(close) and not inspect.isgenerator(source):
        try:
            close()
        except Exception:  # noqa: BLE001 - a failing close must not keep the chunks from flushing
            log.exception("feed: closing the source failed")
    if pump.is_alive():
        pump.join(_SOURCE_CLOSE_TIMEOUT)


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("feed: signal %d, stopping", signum)
        stop.set()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    return previous


def run_feed(settings: Settings, source: Iterable[Tick], *, publish: Callable[[dict[str, Any]], None],
             duration: float | None = None, stop: threading.Event | None = None,
             stats_path: Path | None = None, publisher: MarketDataPublisher | None = None,
             spool: Spool | None = None, retry_interval: float = 1.0,
             extra_stats: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the feed until the source ends, ``stop`` is set, a signal arrives or ``duration`` (s) passes.

    ``publish(payload)`` sends one chunk to the broker or raises; it runs on the enqueuer thread only.
    ``publisher`` (default: a new one on ``settings.zmq_pub_endpoint``, closed at the end) and
    ``spool`` (default: ``settings.spool_dir``) may be passed in.  ``extra_stats()`` adds a
    ``confirm`` entry to the counters (the end-to-end confirmer's).  Returns the final counters.
    Re-raises an exception of the source after flushing everything it produced.
    """
    stop = stop or threading.Event()
    spool = spool if spool is not None else Spool(settings.spool_dir)
    try:
        spool.check()
    except SpoolError as exc:  # not fatal: the broker may be up; chunks are lost only if it is not
        log.error("feed: %s — chunks the broker cannot take will be LOST", exc)
    own_publisher = publisher is None
    publisher = publisher or MarketDataPublisher(settings.zmq_pub_endpoint)
    enqueuer = Enqueuer(publish, spool, settings.enqueue_queue_max, retry_interval=retry_interval)
    feed = _Feed(settings, publisher, enqueuer, extra_stats)
    stats = StatsFile(stats_path) if stats_path else None
    previous = _install_signals(stop)
    pump = _Pump(source, stop)
    inline = _inline(source)
    failure: BaseException | None = None
    deadline = None if duration is None else time.monotonic() + duration
    log.info("feed: publishing on %s, %d ticks per chunk or %.1fs", publisher.endpoint,
             settings.chunk_size, settings.chunk_age)
    try:
        if inline:
            failure = _run_inline(source, feed, stop, deadline, stats)
        else:
            pump.start()
        get = pump.queue.get
        while not inline and not stop.is_set():
            try:
                item = get(timeout=_TICK_WAIT)
            except queue.Empty:
                item = None
            now = time.monotonic()
            if isinstance(item, Tick):
                feed.on_tick(item, now)
            elif item is _END:
                break
            elif isinstance(item, BaseException):
                failure = item
                break
            feed.submit(feed.chunker.due(now))
            if deadline is not None and now >= deadline:
                break
            if stats and stats.due(now):  # counts() takes locks: not once per tick
                stats.update(feed.counts(), now)
    finally:
        stop.set()
        if inline:
            _close_inline(source)
        else:
            _close_source(source, pump)
        # Ticks already handed over were maybe not sent anywhere yet: finish them.
        while True:
            try:
                item = pump.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Tick):
                feed.on_tick(item, time.monotonic())
        feed.submit(feed.chunker.drain())
        enqueuer.close(_CLOSE_TIMEOUT)
        if own_publisher:
            publisher.close()
        for sig, h in previous.items():
            signal.signal(sig, h)
        counts = feed.counts()
        if stats:
            stats.update(counts, time.monotonic(), force=True)
        log.info("feed: stopped: %s", counts)
    if failure is not None:
        raise failure
    return counts


def main_sim(settings: Settings, symbols: Iterable[str], rate: float | str, duration: float | None,
             exchange: str, start_ids: Mapping[str, int] | None, *,
             publish: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run the feed on a :class:`~ttquant_tasks.feed.sim.SimSource`; stats in ``$TTQUANT_HOME/run``."""
    from .sim import SimSource

    source = SimSource(symbols, rate=rate, exchange=exchange, start_ids=start_ids)
    return run_feed(settings, source, publish=publish, duration=duration,
                    stats_path=settings.feed_stats_path)
