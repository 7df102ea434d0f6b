"""ZeroMQ PUB sockets of the feed (market data) and, via :class:`TopicPublisher`, the gateway (trades).

Fan-out to strategies is best effort: a send never blocks.  When a subscriber's high-water mark is
reached ZeroMQ would block or drop; we send with ``NOBLOCK`` and count the drop, because persistence
never depends on a ZMQ subscriber (PITFALLS.md).  A socket is not thread-safe: use it from the thread
that created it.

A message's two frames go out through pyzmq's Cython ``send`` directly: its Python layer
(``send_multipart`` type checks, then ``Socket.send`` per frame) cost more than the sends themselves
(bench, docs/benchmarks.md).  PUB checks its high-water mark on a message's first frame only, so
once that one is taken the second is too: a message goes whole or not at all.
"""

from __future__ import annotations

import zmq
from zmq.backend import Socket as _BackendSocket

from ..models import Tick
from .codec import MarketDataEncoder, md_topic

_send = _BackendSocket.send
_MORE_NOBLOCK = zmq.SNDMORE | zmq.NOBLOCK
_NOBLOCK = zmq.NOBLOCK


class TopicPublisher:
    """A PUB socket bound to ``endpoint`` (e.g. ``tcp://*:5555``) sending ``[topic, body]`` messages."""

    def __init__(self, endpoint: str, sndhwm: int = 100_000, context: zmq.Context[zmq.Socket[bytes]] | None = None
                 ) -> None:
        self.endpoint = endpoint
        self.sent = 0
        self.dropped = 0
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)  # close() must not wait for slow subscribers
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise OSError(f"cannot bind ZeroMQ PUB socket to {endpoint}: {exc}") from exc

    @property
    def bound_endpoint(self) -> str:
        """The endpoint actually bound (resolves a wildcard port such as ``tcp://127.0.0.1:*``)."""
        raw = self._sock.getsockopt(zmq.LAST_ENDPOINT)
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def send_frames(self, topic: bytes, body: bytes) -> bool:
        """Send one two-frame message; False (and a counted drop) when it would block."""
        sock = self._sock
        try:
            _send(sock, topic, _MORE_NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        _send(sock, body, _NOBLOCK)
        self.sent += 1
        return True

    def close(self) -> None:
        """Close the socket at once (linger 0: unsent messages are discarded).  Idempotent."""
        self._sock.close(linger=0)

    def __enter__(self) -> TopicPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MarketDataPublisher(TopicPublisher):
    """Market-data PUB: ``send(tick)`` publishes ``[md.{SYMBOL}.{exchange}, MarketData]``."""

    def __init__(self, endpoint: str, sndhwm: int = 100_000, context: zmq.Context[zmq.Socket[bytes]] | None = None
                 ) -> None:
        super().__init__(endpoint, sndhwm, context)
        self._encode = MarketDataEncoder()

    def send(self, tick: Tick) -> bool:
        """Publish one tick without blocking; False when dropped at the high-water mark."""
        return self.send_frames(md_topic(tick.symbol, tick.exchange), self._encode(tick))
