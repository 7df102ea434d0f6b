"""Chunking of ticks by size and age, straight into the broker payload.  Pure: the caller supplies
a monotonic clock (seconds)."""

from __future__ import annotations

import uuid
from typing import Any

from ..models import PAYLOAD_COLUMNS, PAYLOAD_VERSION, Tick


class PayloadChunker:
    """Groups ticks into chunks: a chunk is released when it holds ``size`` ticks or when its oldest
    tick is ``age_s`` seconds old (monotonic time supplied by the caller), as its broker payload.

    The columns of :func:`~ttquant_tasks.models.chunk_payload` are appended as each tick arrives
    (while it is still in the CPU cache) instead of being gathered from a hundred cold ``Tick``
    objects when the chunk fills: that gather was the feed hot path's slowest tick (bench,
    docs/benchmarks.md).  The payload is equal to ``chunk_payload(exchange, ticks)`` with a fresh
    ``chunk_id``; its exchange is the first tick's (the caller keeps one exchange per chunk).
    """

    def __init__(self, size: int, age_s: float) -> None:
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        if not age_s > 0:
            raise ValueError(f"chunk age must be > 0 seconds, got {age_s}")
        self.size = size
        self.age_s = age_s
        self._since = 0.0
        self._exchange = ""
        self._n = 0
        self._new_columns()

    def _new_columns(self) -> None:
        self._cols: tuple[list[Any], ...] = tuple([] for _ in PAYLOAD_COLUMNS)
        # Bound appends, looked up once per chunk rather than seven times per tick.
        (self._symbol, self._trade_id, self._price, self._qty, self._exchange_time, self._local_time,
         self._buyer_maker) = (c.append for c in self._cols)

    def add(self, tick: Tick, now: float) -> dict[str, Any] | None:
        """Add ``tick``; returns the chunk payload when it has become full, else None."""
        if not self._n:
            self._since = now
            self._exchange = tick.exchange
        self._symbol(tick.symbol)
        self._trade_id(tick.trade_id)
        self._price(tick.price)
        self._qty(tick.qty)
        self._exchange_time(tick.exchange_time)
        self._local_time(tick.local_time)
        self._buyer_maker(tick.buyer_maker)
        self._n += 1
        if self._n >= self.size:
            return self.drain()
        return None

    def due(self, now: float) -> dict[str, Any] | None:
        """The pending chunk's payload when its oldest tick is at least ``age_s`` old, else None."""
        if self._n and now - self._since >= self.age_s:
            return self.drain()
        return None

    def drain(self) -> dict[str, Any] | None:
        """The pending chunk's payload whatever its size or age (None when empty); empty after."""
        if not self._n:
            return None
        out: dict[str, Any] = {"v": PAYLOAD_VERSION, "exchange": self._exchange, "chunk_id": uuid.uuid4().hex}
        out.update(zip(PAYLOAD_COLUMNS, self._cols, strict=True))
        self._n = 0
        self._new_columns()
        return out

    def __len__(self) -> int:
        return self._n
