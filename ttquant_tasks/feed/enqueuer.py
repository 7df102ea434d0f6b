"""The one thread that hands chunks to the broker, so the receive path never waits on it.

``submit`` only puts on a bounded in-memory queue (spilling to the :class:`Spool` when full): it
never blocks and never touches the broker, whose client can hang for a long time when the broker
is down (PITFALLS.md).  The thread publishes; when ``publish`` fails the chunk is spooled and the
broker probed again every ``retry_interval`` seconds with the oldest spooled chunk.

Order: every chunk gets a submission number, which is also its spool key, and the thread always
publishes the oldest chunk it has, whether in the queue or in the spool.  So chunks reach the
broker in submission order, across outages, overflows and restarts (a new Enqueuer replays the
spool first).  Delivery is at least once: a publish that fails after the broker took the message
is sent again; the writes downstream are idempotent.

Hand-over: a chunk submitted with a ``tag`` is reported to ``on_handover(tag)`` once it is safe
without the caller -- the broker accepted it, or the spool took it durably (fsync) -- from
whichever thread did that (the enqueuer's, or the caller's when the queue was full).  The gateway
uses it to trim its write-ahead journal; the feed passes no tag and no callback.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .spool import Spool

log = logging.getLogger(__name__)

Payload = dict[str, Any]
Item = tuple[int, Payload, Any]  # (submission number, payload, tag)
_POLL = 0.05  # s: how often an idle thread looks at the spool and the close flag
_SPOOL_LOG_INTERVAL = 10.0  # s: at most one spool error per interval (a full disk repeats)


class Enqueuer:
    """Publishes submitted chunk payloads in order from a daemon thread; spools what the broker refuses.

    ``publish(payload)`` sends one chunk or raises (``BrokerUnavailable``, or any exception: all are
    treated as "broker unavailable").  Counters (chunks): submitted, published, spooled, replayed, lost.
    """

    def __init__(self, publish: Callable[[Payload], None], spool: Spool, queue_max: int,
                 retry_interval: float = 1.0, name: str = "ttquant-enqueuer",
                 on_handover: Callable[[Any], None] | None = None) -> None:
        if queue_max < 1:
            raise ValueError(f"queue_max must be >= 1, got {queue_max}")
        self._publish = publish
        self._on_handover = on_handover
        self.spool = spool
        self.retry_interval = retry_interval
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=queue_max)
        self._submit_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._next_seq = spool.next_seq
        self._closing = threading.Event()
        self._closed = False
        self._broker_up = True
        self._next_probe = 0.0  # monotonic s; while the broker is down, no publish before it
        self._last_spool_log = {True: -_SPOOL_LOG_INTERVAL, False: -_SPOOL_LOG_INTERVAL}
        self.counts = {"submitted": 0, "published": 0, "spooled": 0, "replayed": 0, "lost": 0}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- caller side ---------------------------------------------------------------------------
    def submit(self, payload: Payload, tag: Any = None) -> None:
        """Hand over one chunk.  Never blocks on the broker; writes to disk only when the queue is full.

        ``tag`` (not None) is passed to ``on_handover`` once the chunk is published or spooled."""
        with self._submit_lock:  # seq order == queue order, also with several submitting threads
            seq = self._next_seq
            self._next_seq += 1
            self._count("submitted")
            if not self._closed:
                try:
                    self._queue.put_nowait((seq, payload, tag))
                    return
                except queue.Full:
                    pass
            self._to_spool(seq, payload, tag)

    def stats(self) -> dict[str, Any]:
        """Counters plus the queue depth, spool size (chunks, ticks) and whether the broker answers."""
        with self._count_lock:
            out: dict[str, Any] = dict(self.counts)
        out.update(queued=self._queue.qsize(), spool_chunks=len(self.spool),
                   spool_ticks=self.spool.pending_ticks(), broker_up=self._broker_up)
        return out

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting (later submits go to the spool), hand queued chunks to the broker or the
        spool, and join the thread for at most ``timeout`` seconds.  Idempotent."""
        with self._submit_lock:
            self._closed = True
        self._closing.set()
        self._thread.join(timeout)
        if self._thread.is_alive():  # stuck in publish: save what is still queued ourselves
            log.error("enqueuer: publish did not return within %.1fs; spooling the queue", timeout)
            self._spool_queue()

    # ---- helpers -------------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            self.counts[name] += n

    def _handed_over(self, tag: Any) -> None:
        if tag is None or self._on_handover is None:
            return
        try:
            self._on_handover(tag)
        except Exception:  # the callback's bug must not stop publishing
            log.exception("enqueuer: on_handover(%r) failed", tag)

    def _to_spool(self, seq: int, payload: Payload, tag: Any = None, lose: bool = True) -> bool:
        """Spool one chunk; on failure count it lost (``lose``) or leave it to the caller to hold."""
        try:
            self.spool.append(payload, seq=seq)
        except Exception as exc:  # SpoolError (disk full, bad dir) or a payload JSON cannot encode
            if lose:
                self._count("lost")
            now = time.monotonic()
            if now - self._last_spool_log[lose] >= _SPOOL_LOG_INTERVAL:  # one clock per message kind
                self._last_spool_log[lose] = now
                if lose:
                    log.error("enqueuer: CHUNK LOST (%d lost so far): it could not be published and %s",
                              self.counts["lost"], exc)
                else:
                    log.error("enqueuer: %s; holding chunks in memory (%d queued) until the broker is back",
                              exc, self._queue.qsize())
            return False
        self._count("spooled")
        self._handed_over(tag)
        return True

    def _spool_queue(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._to_spool(*item)

    def _try_publish(self, payload: Payload) -> bool:
        try:
            self._publish(payload)
        except Exception as exc:  # any failure means "not taken"; the chunk is kept
            if self._broker_up:
                log.warning("enqueuer: broker unavailable (%s: %s); spooling chunks to %s, retrying every %.1fs",
                            type(exc).__name__, exc, self.spool.directory, self.retry_interval)
            self._broker_up = False
            self._next_probe = time.monotonic() + self.retry_interval
            return False
        if not self._broker_up:
            log.warning("enqueuer: broker is back; replaying %d spooled chunks", len(self.spool))
        self._broker_up = True
        return True

    # ---- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        held: Item | None = None  # taken from the queue, not yet published or spooled
        while True:
            try:
                if held is None:
                    try:
                        held = self._queue.get_nowait() if len(self.spool) else self._queue.get(timeout=_POLL)
                    except queue.Empty:
                        held = None
                if self._closing.is_set() and (not self._broker_up or len(self.spool)):
                    # Closing: no waiting for the broker, and nothing newer may overtake the spool.
                    if held is not None:
                        self._to_spool(*held)
                    self._spool_queue()
                    return
                if not self._broker_up and time.monotonic() < self._next_probe:
                    # While down, new chunks go to disk, not memory; a chunk the spool cannot take
                    # stays held (the queue buffers behind it) until the next probe.
                    if held is not None and self._to_spool(*held, lose=False):
                        held = None
                    else:
                        self._closing.wait(min(_POLL, max(0.0, self._next_probe - time.monotonic())))
                    continue
                oldest = self.spool.keys()[:1]
                if oldest and (held is None or oldest[0] < held[0]):
                    self._replay_oldest(held)
                elif held is not None:
                    if self._try_publish(held[1]):
                        self._count("published")
                        self._handed_over(held[2])
                        held = None
                    elif self._to_spool(*held, lose=False):
                        held = None
                elif self._closing.is_set():
                    return
            except Exception:  # the thread must survive anything (e.g. an unreadable spool)
                log.exception("enqueuer: unexpected error; retrying in %.1fs", self.retry_interval)
                if self._closing.is_set():
                    if held is not None:
                        self._to_spool(*held)
                    self._spool_queue()
                    return
                self._closing.wait(self.retry_interval)

    def _replay_oldest(self, held: Item | None) -> None:
        item = self.spool.peek_oldest()
        if item is None:  # the oldest was corrupt and moved aside
            return
        key, payload = item
        if held is not None and key > held[0]:
            return  # a corrupt file was skipped; the held chunk is older now
        if self._try_publish(payload):
            self._count("published")
            self._count("replayed")
            self.spool.remove(key)
