"""Binance combined-stream connections that lose no trade: reconnect, replace stale, rotate with overlap.

Threads: one reader thread per websocket connection (websocket-client, blocking ``recv`` with a short
timeout; it answers server pings with a pong echoing the payload by itself, inside
``recv_data_frame``) puts raw frames on one bounded queue.  The thread iterating a
:class:`BinanceSource` parses them, deduplicates by trade id (:class:`GapTracker`) and yields
:class:`Tick` objects; all bookkeeping (counters, tracker, connection state) lives in that one thread.

Lifecycle of the connections:

* *drop* (close, error, refused): reconnect after ``backoff(attempt)`` (exponential, jittered);
  ``attempt`` resets when the dropped connection had lived ``healthy_after_s``, so a flapping server
  cannot push us past Binance's 300 connection attempts per 5 minutes;
* *stale* (no frame, ping included, for ``stale_after_s``): close it and reconnect;
* *rotation* (age ``max_age_s``, below Binance's 24 h limit) and *serverShutdown*: open a second
  connection while the first keeps flowing.  The new one's frames are buffered until, for every symbol
  it has delivered, its first trade id is at most the old one's last id + 1 (or ``max_overlap_s``
  passed, or the old one ended); then the old one is closed and the buffer drained through the
  tracker, which drops the overlap as duplicates.  So rotation leaves neither gap nor duplicate;
* a trade id jump (on one connection, or across a reconnect) calls ``on_gap(symbol, first, last)``
  with the missing inclusive range; fill it with :func:`ttquant_tasks.feed.backfill.fetch_trades`.

``on_gap`` and ``on_other`` run on the iterating thread: keep them quick (hand work to a queue).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import websocket

from ..errors import backoff as default_backoff
from ..models import Tick
from .binance import AggTrade, BookTicker, FrameError, ParsedFrame, ServerShutdown, combined_stream_url, parse_frame
from .gaps import GapTracker
from .record import Recorder

log = logging.getLogger(__name__)

OnGap = Callable[[str, int, int], None]
OnOther = Callable[[AggTrade | BookTicker], None]


class _Conn:
    """One websocket connection and its reader thread.  Attributes written by the reader are single
    assignments read by the supervisor (atomic under the GIL)."""

    def __init__(self, number: int, started: float) -> None:
        self.number = number
        self.started = started  # monotonic s, when the thread was started
        self.connected: float | None = None  # monotonic s, when the handshake completed
        self.last_frame = started  # monotonic s, last frame of any kind (ping included)
        self.closing = False
        self.buffer: list[tuple[int, str, ParsedFrame | FrameError]] | None = None  # while rotating in
        self.first_ids: dict[str, int] = {}
        self.thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<conn #{self.number}>"


class _LogLimiter:
    """At most one log line per key per ``interval_s``; says how many were suppressed."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval, self._clock = interval_s, clock
        self._next: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = self._clock()
        if now < self._next.get(key, 0.0):
            self._suppressed[key] += 1
            return
        self._next[key] = now + self._interval
        n = self._suppressed.pop(key, 0)
        log.warning(msg + (f" (+{n} similar suppressed)" if n else ""), *args)


class BinanceSource:
    """Iterate it to receive :class:`Tick` objects from ``symbols``' combined stream; :meth:`close` stops it.

    ``ws_base`` is e.g. ``wss://stream.binance.com:9443``.  ``tracker`` should be seeded with the newest
    stored trade id per symbol so the gap since the last run is reported.  ``counters`` counts frames,
    ticks, duplicates, gaps, disconnects by reason, and frame errors as ``frame_error.<kind>``.
    Iterate from one thread only; :meth:`close` may be called from any thread.
    """

    def __init__(
        self,
        ws_base: str,
        symbols: Iterable[str],
        kinds: Iterable[str] = ("trade",),
        *,
        on_gap: OnGap | None = None,
        on_other: OnOther | None = None,
        tracker: GapTracker | None = None,
        recorder: Recorder | None = None,
        stale_after_s: float = 30.0,
        max_age_s: float = 23.5 * 3600,
        overlap_s: float = 5.0,
        max_overlap_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        healthy_after_s: float = 60.0,
        poll_s: float = 0.25,
        queue_size: int = 100_000,
        reconnect_backoff: Callable[[int], float] = default_backoff,
        clock: Callable[[], float] = time.monotonic,
        time_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if not 0 < overlap_s <= max_overlap_s:
            raise ValueError("need 0 < overlap_s <= max_overlap_s")
        if stale_after_s <= poll_s or max_age_s <= 0:
            raise ValueError("need stale_after_s > poll_s and max_age_s > 0")
        self.url = combined_stream_url(ws_base, symbols, kinds)
        self.counters: Counter[str] = Counter()
        self.tracker = tracker or GapTracker()
        self._on_gap, self._on_other, self._recorder = on_gap, on_other, recorder
        self._stale_after, self._max_age = stale_after_s, max_age_s
        self._overlap, self._max_overlap = overlap_s, max_overlap_s
        self._connect_timeout, self._poll = connect_timeout_s, poll_s
        self._healthy_after = healthy_after_s
        self._backoff, self._clock, self._time_ns = reconnect_backoff, clock, time_ns
        self._queue: queue.Queue[tuple[_Conn, int, str] | tuple[_Conn, None, str]] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._logs = _LogLimiter(10.0, clock)
        self._active: _Conn | None = None
        self._pending: _Conn | None = None
        self._conns: list[_Conn] = []
        self._attempt = 0  # consecutive reconnects without a healthy connection in between
        self._opened = 0
        self._reconnect_at = 0.0
        self._rotate_wanted = False  # a rotation failed and must be retried
        self._rotate_not_before = 0.0
        self._rotate_failures = 0

    # -- public -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop: the iterator finishes within about ``poll_s`` and closes every connection."""
        self._stop.set()

    def __iter__(self) -> Iterator[Tick]:
        try:
            while not self._stop.is_set():
                try:
                    conn, recv_ns, payload = self._queue.get(timeout=self._poll)
                except queue.Empty:
                    pass
                else:
                    if recv_ns is None:
                        yield from self._ended(conn, payload)
                    elif conn is self._active:
                        yield from self._process(recv_ns, payload, self._parse(payload, recv_ns))
                    elif conn is self._pending:
                        yield from self._buffer(conn, recv_ns, payload)
                yield from self._housekeep()
        finally:
            self._shutdown()

    # -- connections --------------------------------------------------------------------------
    def _open(self) -> _Conn:
        self._opened += 1
        conn = _Conn(self._opened, self._clock())
        # forget finished connections so months of reconnects do not accumulate
        self._conns = [c for c in self._conns if c.thread is not None and c.thread.is_alive()] + [conn]
        conn.thread = threading.Thread(target=self._read, args=(conn,), name=f"binance-ws-{conn.number}", daemon=True)
        conn.thread.start()
        self.counters["connects"] += 1
        return conn

    def _put(self, conn: _Conn, item: tuple[_Conn, int, str] | tuple[_Conn, None, str]) -> bool:
        while True:  # block when full (back-pressure) but never past close
            try:
                self._queue.put(item, timeout=self._poll)
                return True
            except queue.Full:
                if conn.closing or self._stop.is_set():
                    return False

    def _read(self, conn: _Conn) -> None:
        """Reader thread: frames -> queue; ends with ``(conn, None, reason)``."""
        reason = "closed_by_us"
        try:
            ws = websocket.create_connection(self.url, timeout=self._connect_timeout, enable_multithread=True)
        except Exception as exc:  # noqa: BLE001 - any connect failure means "retry later"
            self._put(conn, (conn, None, f"connect_failed: {type(exc).__name__}: {exc}"))
            return
        conn.connected = conn.last_frame = self._clock()
        ws.settimeout(self._poll)
        try:
            while not conn.closing and not self._stop.is_set():
                try:
                    opcode, frame = ws.recv_data_frame(True)  # pongs pings itself
                except websocket.WebSocketTimeoutException:
                    continue
                except (websocket.WebSocketException, OSError) as exc:
                    reason = f"error: {type(exc).__name__}: {exc}"
                    break
                conn.last_frame = self._clock()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    reason = "closed_by_server"
                    break
                if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    raw = frame.data.decode("utf-8", "replace") if isinstance(frame.data, bytes) else frame.data
                    if not self._put(conn, (conn, self._time_ns(), raw)):
                        break
        finally:
            try:
                if reason == "closed_by_server":
                    ws.shutdown()  # type: ignore[no-untyped-call]  # close frame already answered
                else:
                    ws.close(timeout=1.0)
            except Exception:  # noqa: BLE001 - closing a broken socket may fail; it is gone either way
                pass
            self._put(conn, (conn, None, reason))

    def _retire(self, conn: _Conn) -> None:
        conn.closing = True  # the reader notices within poll_s and closes the socket

    def _ended(self, conn: _Conn, reason: str) -> Iterator[Tick]:
        if conn is not self._active and conn is not self._pending:
            return  # a connection we retired ourselves
        kind = reason.split(":", 1)[0]
        self.counters[f"disconnect.{kind}"] += 1
        self._logs.warning(f"end.{kind}", "binance %r ended: %s", conn, reason)
        self._retire(conn)
        now = self._clock()
        if conn is self._pending:  # rotation failed: the old connection still works, try again later
            self._pending = None
            self._rotate_wanted = True
            self._rotate_not_before = now + self._backoff(self._rotate_failures)
            self._rotate_failures += 1
        elif self._pending is not None:
            yield from self._switch()
        else:
            self._active = None
            if conn.connected is not None and now - conn.connected >= self._healthy_after:
                self._attempt = 0  # it worked for a while: this is a fresh outage, not a flapping server
            self._reconnect_at = now + self._backoff(self._attempt)
            self._attempt += 1

    def _housekeep(self) -> Iterator[Tick]:
        now = self._clock()
        if self._active is None and self._pending is None:
            if now >= self._reconnect_at:
                self._active = self._open()
            return
        for conn in (self._active, self._pending):
            if conn is not None and now - conn.last_frame > self._stale_after:
                self.counters["stale"] += 1
                yield from self._ended(conn, "stale: no frame for %.1fs" % (now - conn.last_frame))
        active, pending = self._active, self._pending
        if (
            active is not None
            and pending is None
            and active.connected is not None
            and (now - active.connected >= self._max_age or self._rotate_wanted)
            and now >= self._rotate_not_before
        ):
            self._start_rotation("age" if not self._rotate_wanted else "retry")
        if (
            pending is not None
            and pending.connected is not None
            and (now - pending.connected >= self._max_overlap or self._caught_up(pending, now))
        ):
            yield from self._switch()

    def _start_rotation(self, why: str) -> None:
        self.counters[f"rotation.{why}"] += 1
        self._rotate_wanted = False
        self._pending = self._open()
        self._pending.buffer = []

    def _caught_up(self, pending: _Conn, now: float) -> bool:
        """True once the new connection overlaps the old one for every symbol it has delivered."""
        if pending.connected is None or now - pending.connected < self._overlap:
            return False
        for symbol, first in pending.first_ids.items():
            last = self.tracker.last(symbol)
            if last is None or first > last + 1:
                return False
        return True

    def _switch(self) -> Iterator[Tick]:
        old, new = self._active, self._pending
        assert new is not None and new.buffer is not None
        if old is not None:
            self._retire(old)
        self._active, self._pending = new, None
        buffered, new.buffer = new.buffer, None
        self.counters["switches"] += 1
        self._rotate_failures = 0
        for recv_ns, raw, parsed in buffered:
            yield from self._process(recv_ns, raw, parsed)

    # -- frames -------------------------------------------------------------------------------
    def _parse(self, raw: str, recv_ns: int) -> ParsedFrame | FrameError:
        try:
            return parse_frame(raw, recv_ns)
        except FrameError as exc:
            return exc

    def _buffer(self, conn: _Conn, recv_ns: int, raw: str) -> Iterator[Tick]:
        parsed = self._parse(raw, recv_ns)
        if isinstance(parsed, AggTrade | BookTicker):
            return  # the old connection still delivers these; they are not deduplicated
        assert conn.buffer is not None
        conn.buffer.append((recv_ns, raw, parsed))
        if isinstance(parsed, Tick):
            conn.first_ids.setdefault(parsed.symbol, parsed.trade_id)
        if len(conn.buffer) >= 50_000:  # the old connection lags badly: stop waiting for it
            yield from self._switch()

    def _process(self, recv_ns: int, raw: str, parsed: ParsedFrame | FrameError) -> Iterator[Tick]:
        self.counters["frames"] += 1
        if self._recorder is not None:
            self._recorder.write(recv_ns, raw)
        if isinstance(parsed, Tick):
            verdict = self.tracker.observe(parsed.symbol, parsed.trade_id)
            if verdict.kind == "duplicate":
                self.counters["duplicates"] += 1
                return
            if verdict.kind == "gap":
                self.counters["gaps"] += 1
                self.counters["gap_ids"] += verdict.to_id - verdict.from_id + 1
                self._logs.warning(
                    f"gap.{parsed.symbol}",
                    "binance %s: trades %d..%d missed",
                    parsed.symbol,
                    verdict.from_id,
                    verdict.to_id,
                )
                if self._on_gap is not None:
                    self._on_gap(parsed.symbol, verdict.from_id, verdict.to_id)
            self.counters["ticks"] += 1
            yield parsed
        elif isinstance(parsed, FrameError):
            self.counters[f"frame_error.{parsed.kind}"] += 1
            self._logs.warning(f"frame.{parsed.kind}", "binance frame skipped: %s (%.120s)", parsed, raw)
        elif isinstance(parsed, ServerShutdown):
            self.counters["server_shutdown"] += 1
            if self._pending is None:
                self._start_rotation("server_shutdown")
        else:
            self.counters[f"other.{type(parsed).__name__}"] += 1
            if self._on_other is not None:
                self._on_other(parsed)

    def _shutdown(self) -> None:
        self._stop.set()
        for conn in self._conns:
            self._retire(conn)
        for conn in self._conns:
            if conn.thread is not None:
                conn.thread.join(timeout=2.0)
