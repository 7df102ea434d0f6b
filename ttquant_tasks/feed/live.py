"""The Binance live source as the feed runs it: websocket stream + REST gap backfill, one iterable.

:class:`LiveBinance` yields the :class:`Tick` objects of a :class:`BinanceSource` *and* those a
backfill thread fetches for every gap, through one bounded queue, so both go down the same chunk
path (ZMQ + chunks -> Celery -> ``market_data``).  Writes are idempotent by trade id, so a range
fetched twice (say, at start-up and again after a restart) costs only bandwidth.

Start-up (on the iterating thread, before the first connection):

* the newest stored trade id per symbol seeds the :class:`GapTracker`: the first live id shows the
  hole left by a stop or crash, and the backfill fetches it;
* holes *below* that id, within the newest ``backfill_max_ids`` ids, are fetched too (a crash can
  lose a backfill in flight while later live ticks were already stored);
* open ``known_gaps`` (ranges an earlier run could not fetch) are retried, and marked filled when
  every id arrived.

A range the backfill cannot fetch (429/418 beyond our bounds, wider than ``backfill_max_ids``, not
published) is recorded in ``known_gaps``; so is a queued range still unfetched at :meth:`close`.
Backfilled ticks are also published on ZMQ: strategies tell them by their old ``exchange_time``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Final

import sqlalchemy as sa

from ..models import Tick
from ..settings import Settings
from .backfill import fetch_trades
from .binance import EXCHANGE
from .gaps import GapTracker
from .record import Recorder
from .ws_source import BinanceSource, OnGap

log = logging.getLogger(__name__)

_POLL: Final = 0.1  # s: how often blocked threads look at the stop flag
_OUT_MAX: Final = 50_000  # ticks between the two producers and the feed's pump
UNFILLED_REASON: Final = "REST backfill could not fetch these ids (rate limit, ban, window or deadline)"


def make_source(settings: Settings, symbols: Iterable[str], *, on_gap: OnGap | None = None,
                tracker: GapTracker | None = None, recorder: Recorder | None = None) -> BinanceSource:
    """A :class:`BinanceSource` configured from ``settings`` (URL, stale time, rotation age).

    The rotation overlap is 5 s, or a quarter of the age limit when that is shorter (tests rotate
    every few seconds); the old connection is given up after at most 60 s of overlap.
    """
    max_age = settings.binance_max_age
    overlap = min(5.0, max_age / 4)
    return BinanceSource(settings.binance_ws_url, symbols, on_gap=on_gap, tracker=tracker, recorder=recorder,
                         stale_after_s=settings.binance_stale_after, max_age_s=max_age, overlap_s=overlap,
                         max_overlap_s=max(overlap, min(60.0, max_age)))


class _Stopped(Exception):
    """Raised inside a backfill wait when the source is closed."""


class _Job:
    __slots__ = ("first", "kind", "last", "symbol")

    def __init__(self, symbol: str, first: int, last: int, kind: str) -> None:
        self.symbol, self.first, self.last, self.kind = symbol, first, last, kind  # kind: live|hole|retry


class LiveBinance:
    """Iterable of ticks from Binance with every gap backfilled; :meth:`close` stops it from any thread.

    ``engine`` is the database the ticks end up in (start-up ids, ``known_gaps``); None or an
    unreachable database only loses the start-up checks and gap records (logged), never the stream.
    Iterate once, from one thread.
    """

    def __init__(self, settings: Settings, symbols: Iterable[str], engine: sa.Engine | None, *,
                 recorder: Recorder | None = None) -> None:
        self.settings = settings
        self.symbols = list(symbols)
        self.engine = engine
        self.tracker = GapTracker()
        self.counters: Counter[str] = Counter()
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._out: queue.Queue[Tick] = queue.Queue(_OUT_MAX)
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self.source = make_source(settings, self.symbols, on_gap=self._on_gap, tracker=self.tracker,
                                  recorder=recorder)

    # -- public ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop streaming and backfilling; the iterator ends within about 0.25 s."""
        self._stop.set()
        self.source.close()

    def __iter__(self) -> Iterator[Tick]:
        self._prepare()
        threads = [threading.Thread(target=self._stream, name="binance-stream", daemon=True),
                   threading.Thread(target=self._backfill, name="binance-backfill", daemon=True)]
        for t in threads:
            t.start()
        try:
            while not self._stop.is_set():
                try:
                    yield self._out.get(timeout=_POLL)
                except queue.Empty:
                    if self._failure is not None:
                        raise self._failure from None
        finally:
            self.close()
            threads[0].join(timeout=3.0)  # the stream stops within its poll interval
            self._record_pending()  # before the backfill join: a slow HTTP call must not cost these
            threads[1].join(timeout=1.0)
            self.counters.update(self.source.counters)
            log.info("binance source stopped: %s", dict(self.counters))

    # -- start-up ------------------------------------------------------------------------------
    def _prepare(self) -> None:
        if self.engine is None:
            return
        from ..storage.audit import missing_id_ranges
        from ..storage.gaps import list_gaps
        from ..storage.queries import last_trade_ids

        try:
            last = last_trade_ids(self.engine, EXCHANGE, self.symbols)
            retry = list_gaps(self.engine, EXCHANGE, self.symbols, open_only=True)
            holes = {s: missing_id_ranges(self.engine, EXCHANGE, s, max(0, top - self.settings.backfill_max_ids), top)
                     for s, top in last.items()}
        except Exception as exc:  # noqa: BLE001 - the stream must run with the database down
            log.warning("binance: cannot read stored trade ids (%s): the gap since the last run is not checked", exc)
            return
        for symbol, top in last.items():
            self.tracker.seed(symbol, top)
        queued = set()
        for g in retry:
            queued.add((g.symbol, g.from_id, g.to_id))
            self._jobs.put(_Job(g.symbol, g.from_id, g.to_id, "retry"))
        for symbol, ranges in holes.items():
            for first, last_id in ranges:
                if (symbol, first, last_id) not in queued:
                    self._jobs.put(_Job(symbol, first, last_id, "hole"))
        log.info("binance: resuming after stored ids %s; %d stored holes and %d open known gaps to fill",
                 last, sum(len(r) for r in holes.values()), len(retry))

    # -- threads -------------------------------------------------------------------------------
    def _on_gap(self, symbol: str, first: int, last: int) -> None:
        self._jobs.put(_Job(symbol, first, last, "live"))  # runs on the stream thread: only queue it

    def _put(self, tick: Tick) -> bool:
        while not self._stop.is_set():
            try:
                self._out.put(tick, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _stream(self) -> None:
        try:
            for tick in self.source:
                if not self._put(tick):
                    break
        except BaseException as exc:  # handed to the iterating thread
            self._failure = exc
            self._stop.set()

    def _wait(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    def _backfill(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=_POLL)
            except queue.Empty:
                continue
            try:
                ticks, unfilled = fetch_trades(
                    self.settings.binance_rest_url, job.symbol, job.first, job.last,
                    api_key=self.settings.binance_api_key, max_ids=self.settings.backfill_max_ids, sleep=self._wait,
                )
            except _Stopped:
                self._jobs.put(job)  # recorded as a known gap by _record_pending
                return
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop the stream; the range is kept
                log.exception("binance: backfill of %s %d..%d failed", job.symbol, job.first, job.last)
                unfilled = [(job.first, job.last)]
                ticks = []
                self.counters[f"backfill_error.{type(exc).__name__}"] += 1
            self.counters["backfill_ranges"] += 1
            self.counters["backfill_ticks"] += len(ticks)
            log.info("binance: backfill %s %d..%d (%s): %d ticks, unfilled %s", job.symbol, job.first, job.last,
                     job.kind, len(ticks), unfilled)
            for tick in ticks:
                if not self._put(tick):
                    # stopping: what was fetched but not handed over is below stored ids: keep it a gap
                    unfilled = [r for r in unfilled if r[1] < tick.trade_id] + [(tick.trade_id, job.last)]
                    break
            for first, last in unfilled:
                self.counters["unfilled_ids"] += last - first + 1
                self._record(job.symbol, first, last)
            if job.kind == "retry" and not unfilled and self.engine is not None:
                from ..storage.gaps import mark_filled

                try:
                    mark_filled(self.engine, EXCHANGE, job.symbol, job.first, job.last)
                except Exception as exc:  # noqa: BLE001 - it stays open and is retried next start
                    log.warning("binance: cannot mark %s %d..%d filled: %s", job.symbol, job.first, job.last, exc)

    def _record(self, symbol: str, first: int, last: int, reason: str = UNFILLED_REASON) -> None:
        log.error("binance: %s trades %d..%d NOT fetched: recorded as a known gap", symbol, first, last)
        if self.engine is None:
            return
        from ..storage.gaps import record_gap

        try:
            record_gap(self.engine, EXCHANGE, symbol, first, last, reason)
        except Exception as exc:  # noqa: BLE001 - the log line above still says it
            log.error("binance: cannot record known gap %s %d..%d: %s", symbol, first, last, exc)

    def _record_pending(self) -> None:
        """Ranges still queued at close: a later start retries them (holes are also re-scanned)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            self._record(job.symbol, job.first, job.last, "feed stopped before this range was backfilled")
