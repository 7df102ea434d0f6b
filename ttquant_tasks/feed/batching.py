"""Chunking of ticks by size and age.  Pure: the caller supplies a monotonic clock (seconds)."""

from __future__ import annotations

from ..models import Tick


class Chunker:
    """Collects ticks into chunks of at most ``size``, released when full or ``age_s`` old.

    A chunk's age is measured from the ``now`` at which its first (oldest) tick was added.
    """

    def __init__(self, size: int, age_s: float) -> None:
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        if not age_s > 0:
            raise ValueError(f"chunk age must be > 0 seconds, got {age_s}")
        self.size = size
        self.age_s = age_s
        self._ticks: list[Tick] = []
        self._since = 0.0

    def add(self, tick: Tick, now: float) -> list[Tick] | None:
        """Add ``tick``; returns the chunk when it has become full, else None."""
        if not self._ticks:
            self._since = now
        self._ticks.append(tick)
        if len(self._ticks) >= self.size:
            return self.drain()
        return None

    def due(self, now: float) -> list[Tick] | None:
        """The pending chunk when its oldest tick is at least ``age_s`` old, else None."""
        if self._ticks and now - self._since >= self.age_s:
            return self.drain()
        return None

    def drain(self) -> list[Tick] | None:
        """The pending chunk whatever its size or age (None when empty); the chunker is empty after."""
        if not self._ticks:
            return None
        out, self._ticks = self._ticks, []
        return out

    def __len__(self) -> int:
        return len(self._ticks)
