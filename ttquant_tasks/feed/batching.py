"""Chunking of ticks by size and age, straight into the broker payload.  Pure: the caller supplies
a monotonic clock (seconds)."""

from __future__ import annotations

from typing import Any

from ..models import Tick, chunk_payload


class PayloadChunker:
    """Groups ticks into chunks: a chunk is released when it holds ``size`` ticks or when its oldest
    tick is ``age_s`` seconds old (monotonic time supplied by the caller), as its broker payload.

    A tick is kept as it came (one append) and the payload's columns are gathered when the chunk is
    released (:func:`~ttquant_tasks.models.chunk_payload`, ~0.12 ms per 1000 ticks).  Appending each
    tick's seven fields to seven column lists as it arrives was the other way; it made the chunk's
    last tick cheaper but every tick dearer, and the hot path's p99 is set by the ordinary ticks
    (one in ``size`` fills a chunk).  The payload is equal to ``chunk_payload(exchange, ticks)``
    with a fresh ``chunk_id``; its exchange is the first tick's (the caller keeps one exchange per chunk).
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
        self._new_chunk()

    def _new_chunk(self) -> None:
        self._ticks: list[Tick] = []
        self._append = self._ticks.append

    def add(self, tick: Tick, now: float) -> dict[str, Any] | None:
        """Add ``tick``; returns the chunk payload when it has become full, else None."""
        if not self._n:
            self._since = now
            self._exchange = tick.exchange
        self._append(tick)
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
        ticks = self._ticks
        self._n = 0
        self._new_chunk()
        return chunk_payload(self._exchange, ticks)

    def pending(self) -> list[Tick]:
        """The ticks of the chunk not released yet (a copy)."""
        return list(self._ticks)

    def __len__(self) -> int:
        return self._n
