"""End-to-end confirmation: a published payload counts as done only once its rows are in the database.

The broker taking a message is not the end of the road.  A Redis without persistence that restarts
loses every queued message, and kombu's Redis transport has a window (BRPOP, then the copy to the
unacked hash) in which a worker killed at the wrong moment takes a message with it (docs/
reliability.md, soak run d).  No setting of Celery closes those; the producer can.

:class:`Confirmer` wraps the enqueuer's ``publish``.  Every payload it publishes is remembered with
its *probe keys* (for a tick chunk, its first and last tick; a chunk is written in one
transaction).  A thread looks, about once a second, for payloads published ``check_after`` seconds
ago or more and asks the database which keys are stored (``stored``); confirmed payloads are
forgotten.  A payload still unconfirmed ``resend_after`` seconds after it was published is sent
again, but only while the database answers and the broker holds no backlog (``backlog()``: ready
messages of the work queue plus the ``parked`` queue is 0), i.e. when nothing can still deliver
it.  The writes are idempotent, so a resend of a payload that was only slow costs work, never a
duplicate row.  After ``max_resends`` a payload is given up with an error in the log.

Memory is bounded: beyond ``memory_ticks`` rows, the oldest unconfirmed payloads are written to the
:class:`Outbox` (a :class:`~.spool.Spool` under ``$TTQUANT_HOME``) and only their keys are kept.
At :meth:`Confirmer.close` every unconfirmed payload goes to the outbox, and the next start checks
(and if need be resends) what it finds there, so a restart does not forget a payload in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ..models import payload_len
from .spool import Spool, SpoolError

log = logging.getLogger(__name__)

Payload = dict[str, Any]
_BATCH = 500  # payloads per database question


class Outbox(Spool):
    """Unconfirmed payloads on disk (a spool read by key, not as a FIFO)."""

    def read(self, key: int) -> Payload | None:
        """As :meth:`Spool.read`, but a file that cannot be read is moved aside (or forgotten), never
        raised: an outbox entry is a second copy, and the confirmer must keep going."""
        try:
            return super().read(key)
        except SpoolError as exc:
            log.error("outbox: %s; it is moved aside", exc)
            with self._lock:
                path = self._path(key) if key in self._ticks else None
            try:
                if path is not None:
                    self._quarantine(key, path, exc)
            except SpoolError:  # an unreadable file we cannot move: forget it
                self._forget(key)
            return None


def tick_keys(payload: Payload) -> tuple[Hashable, ...]:
    """Probe keys of a tick chunk: its first and last tick ``(exchange, symbol, trade_id, exchange_time)``."""
    ex = payload["exchange"]
    sym, tid, et = payload["symbol"], payload["trade_id"], payload["exchange_time"]
    first = (ex, sym[0], tid[0], et[0])
    last = (ex, sym[-1], tid[-1], et[-1])
    return (first,) if first == last else (first, last)


@dataclass
class _Entry:
    keys: tuple[Hashable, ...]
    sent: float  # monotonic s of the last publish
    rows: int
    payload: Payload | None  # None while it is in the outbox only
    outbox_key: int | None = None
    resends: int = 0


class Confirmer:
    """``confirmer(payload)`` publishes like the wrapped ``publish`` and remembers the payload until
    ``stored`` shows its rows (see module doc).  ``close()`` stops the thread and saves the rest.

    ``keys(payload)`` gives a payload's probe keys; ``stored(keys)`` returns those of the given keys
    that are in the database (raises when it cannot tell); ``backlog()`` returns the messages still
    waiting in the broker for the writers (None when it cannot tell).  Counters: published,
    confirmed, resent, given_up, spilled, pending (payloads), pending_rows.
    """

    def __init__(self, publish: Callable[[Payload], None], *, keys: Callable[[Payload], tuple[Hashable, ...]],
                 stored: Callable[[list[Hashable]], set[Hashable]], backlog: Callable[[], int | None],
                 outbox: Outbox | None, check_after: float, resend_after: float, max_resends: int = 3,
                 memory_rows: int = 200_000, interval: float = 1.0, name: str = "ttquant-confirmer",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if resend_after < check_after:
            raise ValueError(f"resend_after ({resend_after}s) must be >= check_after ({check_after}s)")
        self._publish = publish
        self._keys = keys
        self._stored = stored
        self._backlog = backlog
        self.outbox = outbox
        self.check_after = check_after
        self.resend_after = resend_after
        self.max_resends = max_resends
        self.memory_rows = memory_rows
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()  # guards _entries and the counters
        self._publish_lock = threading.Lock()  # the wrapped publisher is not thread-safe
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # by chunk id, oldest publish first
        self._memory = 0  # rows of the payloads held in memory
        self._db_up = True
        self.counts = {"published": 0, "confirmed": 0, "resent": 0, "given_up": 0, "spilled": 0}
        self._load_outbox()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- the enqueuer's side -------------------------------------------------------------------
    def __call__(self, payload: Payload) -> None:
        with self._publish_lock:
            self._publish(payload)
        try:
            keys = self._keys(payload)
        except (KeyError, IndexError, TypeError) as exc:  # not ours to judge: it was published
            log.warning("confirm: payload %s has no probe keys (%s); not tracked", payload.get("chunk_id"), exc)
            return
        rows = max(1, payload_len(payload))  # a gateway record counts as one row
        with self._lock:
            self.counts["published"] += 1
            chunk_id = str(payload.get("chunk_id"))
            old = self._entries.pop(chunk_id, None)
            if old is not None:  # a spool replay of a payload we already track
                self._drop(old)
            self._entries[chunk_id] = _Entry(keys, self._clock(), rows, payload)
            self._memory += rows

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self.counts)
            out.update(pending=len(self._entries), pending_rows=sum(e.rows for e in self._entries.values()),
                       memory_rows=self._memory)
        return out

    def close(self, timeout: float = 2.0) -> None:
        """Stop checking and write every unconfirmed payload still in memory to the outbox."""
        self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            held = [(cid, e) for cid, e in self._entries.items() if e.payload is not None]
        saved = sum(self._spill(cid, e) for cid, e in held)
        if saved:
            log.info("confirm: %d unconfirmed payloads saved to %s for the next start", saved,
                     self.outbox.directory if self.outbox else None)

    # ---- helpers -------------------------------------------------------------------------------
    def _drop(self, entry: _Entry) -> None:
        """Forget ``entry``'s payload (lock held by the caller) and its outbox copy."""
        if entry.payload is not None:
            self._memory -= entry.rows
        if entry.outbox_key is not None and self.outbox is not None:
            try:
                self.outbox.remove(entry.outbox_key)
            except Exception as exc:  # noqa: BLE001 - a stale file is checked again at the next start
                log.warning("confirm: %s", exc)

    def _give_up(self, chunk_id: str, entry: _Entry) -> None:
        with self._lock:
            if self._entries.pop(chunk_id, None) is entry:
                self._drop(entry)
                self.counts["given_up"] += 1

    def _spill(self, chunk_id: str, entry: _Entry) -> bool:
        """Move ``entry``'s payload to the outbox; False (kept in memory) when it cannot."""
        payload = entry.payload
        if payload is None or self.outbox is None:
            return False
        try:
            key = self.outbox.append(payload) if entry.outbox_key is None else entry.outbox_key
        except Exception as exc:  # noqa: BLE001 - disk trouble: keep it in memory
            log.error("confirm: cannot save an unconfirmed payload: %s", exc)
            return False
        with self._lock:
            if self._entries.get(chunk_id) is entry:
                entry.outbox_key, entry.payload = key, None
                self._memory -= entry.rows
                self.counts["spilled"] += 1
                return True
        self.outbox.remove(key)  # confirmed meanwhile
        return False

    def _load_outbox(self) -> None:
        if self.outbox is None:
            return
        due = self._clock() - self.check_after  # checked at the first turn
        for key in list(self.outbox.keys()):  # noqa: SIM118 - a Spool is not a dict
            payload = self.outbox.read(key)
            if payload is None:
                continue
            try:
                keys = self._keys(payload)
            except (KeyError, IndexError, TypeError):
                log.error("confirm: outbox entry %d has no probe keys; removed", key)
                self.outbox.remove(key)
                continue
            chunk_id = str(payload.get("chunk_id", f"outbox-{key}"))
            self._entries[chunk_id] = _Entry(keys, due, max(1, payload_len(payload)), None, key)
        if self._entries:
            log.info("confirm: %d payloads of an earlier run to confirm (%s)", len(self._entries),
                     self.outbox.directory)

    # ---- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the thread must outlive anything
                log.exception("confirm: check failed")

    def check(self) -> None:
        """One turn: confirm what is due, resend what is stale (if safe), spill over the memory bound."""
        now = self._clock()
        with self._lock:
            due = [(cid, e) for cid, e in self._entries.items() if now - e.sent >= self.check_after]
        for start in range(0, len(due), _BATCH):
            if not self._confirm(due[start:start + _BATCH]):
                break
        if self._db_up:
            self._resend(now)
        self._bound_memory()

    def _confirm(self, batch: list[tuple[str, _Entry]]) -> bool:
        keys = [k for _, e in batch for k in e.keys]
        try:
            stored = self._stored(keys)
        except Exception as exc:  # the database is away: nothing is confirmed, nothing resent
            if self._db_up:
                log.warning("confirm: cannot check stored rows (%s); holding %d payloads", exc, len(self._entries))
            self._db_up = False
            return False
        self._db_up = True
        with self._lock:
            for cid, entry in batch:
                if all(k in stored for k in entry.keys) and self._entries.get(cid) is entry:
                    del self._entries[cid]
                    self._drop(entry)
                    self.counts["confirmed"] += 1
        return True

    def _resend(self, now: float) -> None:
        with self._lock:
            stale = [(cid, e) for cid, e in self._entries.items() if now - e.sent >= self.resend_after]
        if not stale:
            return
        try:
            backlog = self._backlog()
        except Exception as exc:  # noqa: BLE001 - cannot tell: do not resend
            log.debug("confirm: backlog unknown: %s", exc)
            return
        if backlog is None or backlog > 0:
            return  # the broker still holds work: the payloads may be in it
        for cid, entry in stale:
            if entry.resends >= self.max_resends:
                log.error("confirm: GIVING UP on payload %s: its rows are not stored after %d resends",
                          cid, entry.resends)
                self._give_up(cid, entry)
                continue
            payload = entry.payload or (self.outbox.read(entry.outbox_key) if self.outbox is not None
                                        and entry.outbox_key is not None else None)
            if payload is None:  # its outbox copy is gone or unreadable (logged)
                self._give_up(cid, entry)
                continue
            try:
                with self._publish_lock:
                    self._publish(payload)
            except Exception as exc:  # noqa: BLE001 - the broker went away: next turn
                log.warning("confirm: resend failed (%s)", exc)
                return
            log.warning("confirm: payload %s (%d rows) was not stored %.0fs after publishing: sent again",
                        cid, entry.rows, now - entry.sent)
            with self._lock:
                entry.resends += 1
                entry.sent = self._clock()
                if self._entries.get(cid) is entry:
                    self._entries.move_to_end(cid)
                self.counts["resent"] += 1

    def _bound_memory(self) -> None:
        if self._memory <= self.memory_rows or self.outbox is None:
            return
        with self._lock:
            held = [(cid, e) for cid, e in self._entries.items() if e.payload is not None]
        for cid, entry in held:
            if self._memory <= self.memory_rows:
                return
            if not self._spill(cid, entry):
                return

