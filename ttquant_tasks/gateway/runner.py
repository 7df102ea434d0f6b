"""The gateway's socket loop: ZMQ PULL orders + SUB market data -> :class:`OrderService` -> ZMQ PUB trades.

Threads, and why:

* the *calling* thread owns the three sockets (ZMQ sockets are not thread-safe) and runs the
  loop: orders first, then the market data waiting (at most ``_MD_BATCH`` messages, only the
  newest of each topic decoded: the gateway needs the last price); each order is risk-checked,
  executed and answered on the trade PUB before the next one is read;
* the *enqueuer* thread (:class:`~ttquant_tasks.feed.enqueuer.Enqueuer`, own spool directory) is
  the only one that talks to the broker; the order path only puts records on its queue, so a
  broker or database outage never delays a trade;
* the *journal* thread (:class:`~.journal.Journal`) fsyncs the write-ahead journal every 0.1 s and
  trims it.

Write-ahead journal: every record is appended to ``$TTQUANT_HOME/gateway-journal`` (a ``write()``
into the page cache, microseconds) *before* it goes to the enqueuer, and so before the order's
trade is published on ZMQ: a SIGKILL loses nothing a strategy was told.  The enqueuer reports each
record it handed to the broker or the spool (``on_handover``), which lets the journal drop whole
segments.  On start, before serving, every entry not known to be handed over is submitted to the
enqueuer again, in journal order (an order's NEW record before its trades; duplicates are harmless,
the writes are idempotent), and the newest journaled position snapshots are laid over the restored
positions.  When the journal cannot be written, orders are answered REJECTED with code 1011
(retryable) and not executed -- the gateway never trades without durability -- while it keeps
reading market data; the journal is tried again every ``_JOURNAL_RETRY_S``.

Start: positions are restored from the database (``load_positions``), retried for
``restore_timeout`` seconds, and merged with the gateway's own saved record
(:mod:`~ttquant_tasks.gateway.state`), which wins for a (strategy, symbol) unless the database has a
newer snapshot -- the database may not have the previous run's last records yet.  If the database
does not answer, the saved record alone is used; with neither, the gateway starts FLAT with
an error in the log: trading continues (fills and their trade rows are safe), but position limits
and the position snapshots written afterwards start from zero until the next restart with the
database up.  That choice keeps strategies running through a database outage at start; an
operator who prefers not to trade blind watches for ``POSITIONS NOT RESTORED``.

Stop (SIGTERM/SIGINT when run on the main thread, or ``stop``): stop reading orders, hand queued
records to the broker or the spool (at most ~3 s, inside honcho's 5 s), fsync and trim the journal
(nothing is left to replay after a clean stop), close the sockets.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from ..bus.codec import decode_market_data, tick_from_market_data
from ..bus.zmq import TopicPublisher
from ..errors import backoff
from ..feed.enqueuer import Enqueuer
from ..feed.spool import Spool, SpoolError
from ..feed.stats import StatsFile
from ..settings import Settings
from . import state
from .exchanges import Exchange
from .journal import Journal, JournalError, Recovered, journal_dir, latest_positions
from .orders import Code, Rejection
from .positions import Position
from .records import group_record
from .risk import RiskLimits
from .service import OrderService

log = logging.getLogger(__name__)

DEFAULT_MD_CONNECT = "tcp://127.0.0.1:5555"
_POLL_MS = 50  # longest the loop waits before looking at ``stop``
_BATCH = 1000  # orders per loop turn, so the market data is read between bursts of orders
_MD_BATCH = 500  # market-data messages per loop turn (~1 ms to read): orders are looked at in between
_SAVE_EVERY_S = 1.0  # positions saved locally at most this often while fills happen (and at stop)
_CLOSE_TIMEOUT = 3.0  # s, for the enqueuer on shutdown (honcho kills after 5 s)
_JOURNAL_RETRY_S = 5.0  # s between attempts to use an unwritable journal again
_REPLAY_GROUP = 64  # journal entries per group payload when replaying at start


def gateway_spool_dir(settings: Settings) -> Path:
    """The gateway's own spool (the feed's sequence numbers must not mix with ours)."""
    return settings.home / "gateway-spool"


def restore_positions(load: Callable[[], list[Position]], timeout: float,
                      stop: threading.Event | None = None) -> list[Position] | None:
    """``load()`` retried with backoff for ``timeout`` seconds; None when it never succeeded."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            return load()
        except Exception as exc:  # any failure: the database is down, or not migrated yet
            wait = backoff(attempt, base=0.25, cap=2.0)
            if time.monotonic() + wait > deadline or (stop is not None and stop.is_set()):
                log.error("gateway: loading positions failed: %s", exc)
                return None
            log.warning("gateway: loading positions failed (%s); retrying in %.1fs", exc, wait)
            attempt += 1
            if stop is not None and stop.wait(wait):
                return None
            if stop is None:
                time.sleep(wait)


class Gateway:
    """One gateway run (see module doc).  Build it, then call :meth:`run` on the thread that owns it.

    ``publish(record)`` sends one record to the broker or raises (enqueuer thread only; see
    :class:`~ttquant_tasks.tasks.orders.RecordPublisher`).  ``load_positions`` restores state
    (None: start flat without trying).  ``md_connect`` is the feed's market-data PUB to SUBscribe
    to (all ``md.`` topics; the last price is kept per symbol).  ``clock`` gives ns since epoch.
    """

    def __init__(self, settings: Settings, *, exchange: Exchange, limits: RiskLimits,
                 publish: Callable[[dict[str, Any]], None], md_connect: str = DEFAULT_MD_CONNECT,
                 load_positions: Callable[[], list[Position]] | None = None, restore_timeout: float = 10.0,
                 load_position_times: Callable[[], dict[tuple[str, str], int]] | None = None,
                 spool: Spool | None = None, retry_interval: float = 1.0,
                 clock: Callable[[], int] = time.time_ns, journal: Journal | None = None) -> None:
        self.settings = settings
        self.md_connect = md_connect
        self._publish = publish
        self._load = load_positions
        self.restore_timeout = restore_timeout
        self.spool = spool if spool is not None else Spool(gateway_spool_dir(settings))
        self.retry_interval = retry_interval
        self.enqueuer: Enqueuer | None = None
        self.journal = journal if journal is not None else Journal(journal_dir(settings.home),
                                                                   hold_for_checkpoint=True)
        self._journaled_last = False  # whether the last submitted record is in the journal
        self._batch: list[dict[str, Any]] | None = None  # records of the order being handled
        self._journaled: list[tuple[dict[str, Any], int | None]] = []  # of those, journaled at _gate
        self._journal_positions: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._next_journal_try = 0.0
        self.service = OrderService(exchange=exchange, limits=limits, submit=self._submit,
                                    exchange_name=settings.exchange, clock=clock, gate=self._gate)
        self._load_times = load_position_times
        self._state_path = state.state_path(settings.home)
        self._saved_fills = 0
        self._next_save = 0.0
        self.ready = threading.Event()  # set once the sockets are bound and connected
        self.restored: bool | None = None
        self.counts: dict[str, Any] = {"md_bad": 0, "errors": 0, "journal_replayed": 0, "journal_refused": 0,
                                       "not_journaled": 0}
        self._trades: TopicPublisher | None = None  # its sent / dropped counters are in stats()
        # Its figures for ``ttquant status`` in another process, once a second ($TTQUANT_HOME/run/gateway.json).
        self._stats_file = StatsFile(settings.gateway_stats_path)

    def _submit(self, record: dict[str, Any]) -> None:
        if self._batch is not None:  # inside an order: journaled together (see _on_order)
            self._batch.append(record)
        else:
            self._hand_over(self._journal([record]))

    def _journal(self, records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int | None]]:
        """Append ``records`` to the journal (one write); each with its seq, None when not journaled."""
        seqs: list[int] | None = None
        if records and self.journal.healthy:
            try:
                seqs = self.journal.append_many(records)
            except JournalError as exc:  # logged by the journal; from now on orders are refused
                log.error("gateway: JOURNAL UNAVAILABLE: %s; orders are rejected (code %d) until it is "
                          "writable again", exc, Code.JOURNAL_UNAVAILABLE)
        if seqs is None:
            self.counts["not_journaled"] += len(records)
        self._journaled_last = seqs is not None
        return list(zip(records, seqs if seqs is not None else [None] * len(records), strict=True))

    def _hand_over(self, journaled: list[tuple[dict[str, Any], int | None]]) -> None:
        """Give records to the enqueuer: one alone, several as one group payload (one message,
        task and commit); the tag is the tuple of their journal seqs."""
        assert self.enqueuer is not None, "records are only produced while running"
        if not journaled:
            return
        records = [record for record, _ in journaled]
        tag = tuple(seq for _, seq in journaled if seq is not None) or None
        self.enqueuer.submit(records[0] if len(records) == 1 else group_record(records), tag)

    def _handed_over(self, tag: tuple[int, ...]) -> None:
        self.journal.handed_over(*tag)

    def _gate(self) -> Rejection | None:
        """Journal the order's NEW record now; refuse the order (before it is executed) if that failed.

        The record goes to the enqueuer with the order's other records, after execution (one group)."""
        if self._batch:
            batch, self._batch = self._batch, []
            self._journaled.extend(self._journal(batch))
        if self._journaled_last:
            return None
        self.counts["journal_refused"] += 1
        return Rejection(Code.JOURNAL_UNAVAILABLE,
                         f"gateway journal {self.journal.directory} is not writable ({self.journal.error}); "
                         "order not executed", retryable=True)

    def _open_journal(self) -> Recovered | None:
        saved_seq = state.saved_journal_seq(self._state_path) or 0
        try:
            recovered = self.journal.open(next_at_least=saved_seq + 1)
        except JournalError as exc:
            log.error("gateway: JOURNAL UNAVAILABLE: %s; orders are rejected (code %d) until it is writable",
                      exc, Code.JOURNAL_UNAVAILABLE)
            return None
        return recovered

    def _replay(self, recovered: Recovered) -> None:
        """Submit what the journal holds and was not handed over, oldest first (before any new record)."""
        assert self.enqueuer is not None
        entries = recovered.to_replay
        for start in range(0, len(entries), _REPLAY_GROUP):
            self._hand_over([(e.record, e.seq) for e in entries[start:start + _REPLAY_GROUP]])
        self.counts["journal_replayed"] += len(entries)
        if entries:
            log.warning("gateway: replaying %d journaled records not known to be handed over (seq %d..%d)",
                        len(entries), entries[0].seq, entries[-1].seq)

    def _retry_journal(self) -> None:
        now = time.monotonic()
        if now < self._next_journal_try:
            return
        self._next_journal_try = now + _JOURNAL_RETRY_S
        if self.journal.opened:
            self.journal.recover()
            return
        recovered = self._open_journal()
        if recovered is not None:
            log.warning("gateway: journal %s is usable now; orders are accepted", self.journal.directory)
            self._replay(recovered)

    def stats(self) -> dict[str, Any]:
        out = {**self.service.counts, **self.counts, "zmq_sent": self._trades.sent if self._trades else 0,
               "zmq_dropped": self._trades.dropped if self._trades else 0}
        if self.enqueuer is not None:
            out.update({f"enqueue_{k}": v for k, v in self.enqueuer.stats().items()})
        out.update({f"journal_{k}": v for k, v in self.journal.stats().items()})
        return out

    def _restore(self, stop: threading.Event) -> None:
        saved = state.load(self._state_path)
        positions = restore_positions(self._load, self.restore_timeout, stop) if self._load else None
        if positions is None and stop.is_set():
            self.restored = False
            return
        journaled = self._journal_positions
        if positions is None and saved is not None:
            positions = list(saved[1].values())
            log.warning("gateway: database unavailable: positions restored from %s only", self._state_path)
        elif positions is None and not journaled:
            self.restored = False
            log.error("gateway: POSITIONS NOT RESTORED: the database did not answer within %.0fs; "
                      "starting FLAT (position limits and snapshots start from zero)", self.restore_timeout)
            return
        elif positions is None:
            positions = []
            log.warning("gateway: database unavailable and no saved record: positions from the journal only")
        else:
            # The database may not have the previous run's last records yet (queued, spooled).
            positions = state.merge(positions, self._snapshot_times(), saved)
        if journaled:  # snapshots the save (up to 1 s old) may not include
            saved_seq = state.saved_journal_seq(self._state_path) if saved is not None else None
            positions = state.from_journal(positions, journaled, saved_seq)
        self.service.positions = {(p.strategy_id, p.symbol): p for p in positions}
        self.restored = True
        log.info("gateway: restored %d positions: %s", len(positions), state.describe(positions))

    def _snapshot_times(self) -> dict[tuple[str, str], int]:
        if self._load_times is None:
            return {}
        try:
            return self._load_times()
        except Exception as exc:  # the database went away between two queries: trust the saved record
            log.warning("gateway: reading snapshot times failed (%s); saved positions win", exc)
            return {}

    def _save_positions(self) -> None:
        self._saved_fills = self.service.counts.get("fills", 0)
        self._next_save = time.monotonic() + _SAVE_EVERY_S
        seq = self.journal.last_seq
        if state.save(self._state_path, self.service.positions.values(), time.time_ns(), journal_seq=seq):
            self.journal.checkpoint(seq)  # segments up to seq no longer hold the only copy of a position

    def _on_market_data(self, frames: list[bytes]) -> bool:
        """Take the price of one message; False (and counted in ``md_bad``) when it does not parse."""
        try:
            tick = tick_from_market_data(decode_market_data(frames[-1]))
            price = Decimal(tick.price)
        except (ValueError, InvalidOperation) as exc:  # PayloadError is a ValueError
            self.counts["md_bad"] += 1
            log.debug("gateway: bad market data message: %s", exc)
            return False
        self.service.on_price(tick.symbol, price)
        return True

    def _take_market_data(self, sub: zmq.Socket[bytes]) -> None:
        """Read up to ``_MD_BATCH`` waiting messages; decode only the newest of each topic.

        Only the last price per symbol matters here, so a burst of ticks costs one ``recv`` each
        and one decode per topic (decoding all of them took ~25% of a core at 20k ticks/s).  A
        newest message that does not parse falls back to the one before it, as reading them one by
        one would.
        """
        latest: dict[bytes, list[list[bytes]]] = {}
        for _ in range(_MD_BATCH):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            latest.setdefault(frames[0], []).append(frames)
        for messages in latest.values():
            for frames in reversed(messages):
                if self._on_market_data(frames):
                    break

    def _serve_orders(self, pull: zmq.Socket[bytes], trades: TopicPublisher, stop: threading.Event) -> None:
        for _ in range(_BATCH):
            if stop.is_set():
                break
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._on_order(frames, trades)

    def _on_order(self, frames: list[bytes], trades: TopicPublisher) -> None:
        if len(frames) != 1:
            self.service.counts["orders"] += 1
            self.service.counts["malformed"] += 1
            self.service.counts["unanswerable"] += 1
            log.warning("gateway: order message with %d frames (expected 1) ignored", len(frames))
            return
        # The order's NEW record is journaled before it is executed (``_gate``); its other records
        # (fills, position snapshots, final status) together in one write, before any trade goes
        # out: a SIGKILL leaves all of them or none, never a fill without its position snapshot.
        self._batch, self._journaled = [], []
        try:
            out = self.service.handle(frames[0])
        except Exception:  # a bug or an adapter that raised: log it, keep serving the others
            self.counts["errors"] += 1
            log.exception("gateway: error handling an order")
            return
        finally:
            batch, self._batch = self._batch, None
            journaled, self._journaled = self._journaled, []
            if batch:
                journaled.extend(self._journal(batch))
            self._hand_over(journaled)
        for topic, body in out:
            trades.send_frames(topic, body)

    def run(self, stop: threading.Event | None = None) -> dict[str, Any]:
        """Serve until ``stop`` is set (or a signal arrives on the main thread); returns the counters."""
        stop = stop or threading.Event()
        previous = _install_signals(stop)
        try:
            self.spool.check()
        except SpoolError as exc:  # not fatal: records are lost only if the broker is down too
            log.error("gateway: %s; records the broker cannot take will be LOST", exc)
        recovered = self._open_journal()
        self.enqueuer = Enqueuer(self._publish, self.spool, self.settings.enqueue_queue_max,
                                 retry_interval=self.retry_interval, name="ttquant-gateway-enqueuer",
                                 on_handover=self._handed_over)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        pull = sub = None
        trades: TopicPublisher | None = None
        try:
            if recovered is not None:
                self._replay(recovered)
                self._journal_positions = latest_positions(recovered.entries)
            self._restore(stop)
            if self.restored:
                self._save_positions()  # and a checkpoint: the previous runs' segments can go once handed over
            self._trades = trades = TopicPublisher(self.settings.zmq_trade_endpoint, context=ctx)
            pull = ctx.socket(zmq.PULL)
            pull.setsockopt(zmq.LINGER, 0)
            pull.bind(self.settings.zmq_pull_endpoint)
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"md.")
            sub.connect(self.md_connect)
            poller = zmq.Poller()
            poller.register(sub, zmq.POLLIN)
            poller.register(pull, zmq.POLLIN)
            log.info("gateway: orders on %s, trades on %s, market data from %s, venue %r",
                     self.settings.zmq_pull_endpoint, self.settings.zmq_trade_endpoint, self.md_connect,
                     self.service.exchange)
            self.ready.set()
            while not stop.is_set():
                events = dict(poller.poll(_POLL_MS))
                if pull in events:  # orders first: an order never waits behind a burst of ticks
                    self._serve_orders(pull, trades, stop)
                if sub in events:
                    self._take_market_data(sub)
                if self.service.counts.get("fills", 0) != self._saved_fills and time.monotonic() >= self._next_save:
                    self._save_positions()
                if not self.journal.healthy:
                    self._retry_journal()
                if self._stats_file.due(now := time.monotonic()):
                    self._stats_file.update(self.stats(), now)
        finally:
            stop.set()
            if self.restored is not None:
                self._save_positions()
            for sock in (pull, sub):
                if sock is not None:
                    sock.close(linger=0)
            self.enqueuer.close(_CLOSE_TIMEOUT)
            self.journal.close()  # a last fsync and trim: after a clean stop nothing is replayed
            if trades is not None:
                trades.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            final = self.stats()
            self._stats_file.update({**final, "stopped": True}, time.monotonic(), force=True)
            log.info("gateway: stopped: %s", final)
        return final


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("gateway: signal %d, stopping", signum)
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def run_gateway(settings: Settings, *, exchange: Exchange, limits: RiskLimits,
                publish: Callable[[dict[str, Any]], None], md_connect: str = DEFAULT_MD_CONNECT,
                stop: threading.Event | None = None, restore_timeout: float = 10.0) -> dict[str, Any]:
    """Run a gateway until stopped; positions restored from ``settings.db_uri`` (see module doc)."""
    load: Callable[[], list[Position]] | None = None
    load_times: Callable[[], dict[tuple[str, str], int]] | None = None
    if settings.db_uri:
        from ..storage.engine import get_engine
        from ..storage.orders import load_positions, position_times

        uri = settings.db_uri

        def load() -> list[Position]:
            return load_positions(get_engine(uri))

        def load_times() -> dict[tuple[str, str], int]:
            return position_times(get_engine(uri))

    gateway = Gateway(settings, exchange=exchange, limits=limits, publish=publish, md_connect=md_connect,
                      load_positions=load, load_position_times=load_times, restore_timeout=restore_timeout)
    return gateway.run(stop)


def main(settings: Settings, *, risk_path: str | Path, md_connect: str = DEFAULT_MD_CONNECT,
         exchange: Exchange | None = None) -> int:
    """``ttquant gateway``: paper venue unless ``exchange`` is given; limits from the TOML ``risk_path``.

    Resolves the broker and database (embedded ones found or started), publishes records through
    :class:`~ttquant_tasks.tasks.orders.RecordPublisher`, and returns 0 after a clean stop.
    """
    from ..runtime import make_confirmer
    from ..tasks.app import make_app
    from ..tasks.orders import RecordPublisher
    from .exchanges.paper import PaperExchange
    from .risk import load_limits

    limits = load_limits(risk_path)  # a bad file fails here, before any socket is bound
    app = make_app(settings)
    resolved = app.settings
    publisher = RecordPublisher(app, resolved.publish_timeout)
    confirmer = make_confirmer(resolved, app, publisher, records=True)
    try:
        run_gateway(resolved, exchange=exchange or PaperExchange(), limits=limits,
                    publish=confirmer or publisher, md_connect=md_connect)
    finally:
        if confirmer is not None:
            confirmer.close()
            log.info("gateway: end-to-end confirmation: %s", confirmer.stats())
        publisher.close()
    return 0
