"""Per-symbol trade-id bookkeeping: is this trade new, a duplicate, or after a gap?  Pure.

Binance trade ids increase by one per symbol, so the last id seen is enough to tell a repeat
(``id <= last``: an overlapping connection or a replayed frame — drop it) from a jump (``id > last + 1``:
trades were missed — report ``gap(last + 1, id - 1)`` so the backfill fetches them).  Seed each symbol
with the newest id already stored, so a restart neither re-stores nor silently skips.

A small window of recently accepted ids backs the ``id <= last`` rule up: it lets
:meth:`GapTracker.accept_late` take an id inside a reported gap exactly once (a backfilled or
late-arriving trade) without ever accepting one twice.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Literal


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """``kind`` is ``new``, ``duplicate`` or ``gap``; for ``gap``, ids ``from_id..to_id`` (inclusive) are missing
    and the observed trade itself is new."""

    kind: Literal["new", "duplicate", "gap"]
    from_id: int = 0
    to_id: int = 0

    @property
    def is_new(self) -> bool:
        """True when the observed trade should be kept (``new`` or ``gap``)."""
        return self.kind != "duplicate"


NEW = Verdict("new")
DUPLICATE = Verdict("duplicate")


class _Symbol:
    __slots__ = ("last", "recent", "recent_set")

    def __init__(self, last: int | None, window: int) -> None:
        self.last = last
        self.recent: deque[int] = deque(maxlen=window)
        self.recent_set: set[int] = set()

    def remember(self, trade_id: int) -> None:
        if len(self.recent) == self.recent.maxlen:
            self.recent_set.discard(self.recent[0])
        self.recent.append(trade_id)
        self.recent_set.add(trade_id)


class GapTracker:
    """Tracks the last trade id per symbol.  Not thread-safe: call it from one thread.

    ``window`` is how many recent ids per symbol are remembered for :meth:`accept_late`.
    """

    def __init__(self, window: int = 4096) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self._window = window
        self._symbols: dict[str, _Symbol] = {}

    def seed(self, symbol: str, last_stored_id: int | None) -> None:
        """Start ``symbol`` after ``last_stored_id`` (the newest id in the database; None = nothing stored).

        With a seed the first live trade reports the gap since the last run; without one the first
        trade is simply new.
        """
        self._symbols[symbol] = _Symbol(last_stored_id, self._window)

    def last(self, symbol: str) -> int | None:
        """Newest id accepted (or seeded) for ``symbol``, None when unknown."""
        s = self._symbols.get(symbol)
        return None if s is None else s.last

    def observe(self, symbol: str, trade_id: int) -> Verdict:
        """Classify the live trade ``trade_id`` of ``symbol`` and, unless a duplicate, accept it."""
        s = self._symbols.get(symbol)
        if s is None:
            s = self._symbols[symbol] = _Symbol(None, self._window)
        last = s.last
        if last is not None and trade_id <= last:
            return DUPLICATE
        s.last = trade_id
        s.remember(trade_id)
        if last is None or trade_id == last + 1:
            return NEW
        return Verdict("gap", last + 1, trade_id - 1)

    def accept_late(self, symbol: str, trade_id: int) -> bool:
        """Accept an id below the newest (from a backfill) once: True the first time within the window.

        Ids above the newest are refused here (they are live trades: use :meth:`observe`).
        """
        s = self._symbols.get(symbol)
        if s is None or s.last is None or trade_id > s.last or trade_id in s.recent_set:
            return False
        s.remember(trade_id)
        return True
