"""A simulated trade source: paced, seeded random-walk ticks with consecutive ids per symbol.

Prices move on the symbol's tick size and quantities on its lot step, as exact decimal strings
(``"64321.10"``, ``"0.00123"``).  With a ``seed`` everything but the timestamps is reproducible.
Times are ns since the epoch (UTC) from ``clock``; ``exchange_time`` never goes backwards.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from ..models import Tick

# symbol -> (start price, price tick, quantity step); others get _DEFAULT_SPEC.
_SPECS: dict[str, tuple[str, str, str]] = {
    "BTCUSDT": ("64000.00", "0.01", "0.00001"),
    "ETHUSDT": ("3000.00", "0.01", "0.0001"),
    "BNBUSDT": ("600.0", "0.1", "0.001"),
    "SOLUSDT": ("150.00", "0.01", "0.001"),
}
_DEFAULT_SPEC = ("100.00", "0.01", "0.001")
_MIN_SLEEP = 0.005  # s: below this we keep producing and sleep later, so pacing costs ~200 sleeps/s at most
_MAX_LAG = 1.0  # s: when this far behind schedule (a stalled consumer), restart the schedule, do not burst


class _Walk:
    """Random-walk state of one symbol, in integer units of tick and step (exact, no float)."""

    def __init__(self, spec: tuple[str, str, str], next_id: int) -> None:
        start, tick, step = (Decimal(x) for x in spec)
        self.tick, self.step = tick, step
        self.units = int(start / tick)
        self.next_id = next_id


class SimSource:
    """Iterator of :class:`Tick` at ``rate`` ticks per second in total (``<= 0`` or ``"max"``: unpaced).

    Trade ids are consecutive per symbol, starting after ``start_ids[symbol]`` (default: at 1), so a
    restart that passes the newest stored ids keeps the sequence gap-free.  Pacing sleeps in batches
    (only once at least 5 ms ahead of schedule), so thousands of ticks per second stay cheap.
    """

    def __init__(self, symbols: Iterable[str], rate: float | str, exchange: str = "sim", seed: int | None = None,
                 start_ids: Mapping[str, int] | None = None, clock: Callable[[], int] = time.time_ns, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.symbols = tuple(symbols)
        if not self.symbols:
            raise ValueError("SimSource needs at least one symbol")
        if rate == "max":
            rate = 0.0
        if isinstance(rate, str):
            raise ValueError(f"rate must be ticks per second or 'max', got {rate!r}")
        self.rate = float(rate)
        self.exchange = exchange
        start_ids = start_ids or {}
        self._walks = {s: _Walk(_SPECS.get(s, _DEFAULT_SPEC), start_ids.get(s, 0) + 1) for s in self.symbols}
        self._rng = random.Random(seed)
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._last_time = 0
        self._t0: float | None = None
        self._n = 0

    @property
    def max_block_s(self) -> float:
        """Longest this source sleeps between ticks (s): 0 unpaced, else about one tick interval."""
        return 0.0 if self.rate <= 0 else 1.0 / self.rate

    def __iter__(self) -> SimSource:
        return self

    def _pace(self) -> None:
        now = self._monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._n / self.rate
        ahead = due - now
        if ahead >= _MIN_SLEEP:
            self._sleep(ahead)
        elif ahead < -_MAX_LAG:
            self._t0, self._n = now, 0
        self._n += 1

    def __next__(self) -> Tick:
        if self.rate > 0:
            self._pace()
        rng = self._rng
        symbol = rng.choice(self.symbols)
        w = self._walks[symbol]
        w.units = max(1, w.units + rng.randint(-3, 3))
        qty_units = rng.randint(1, 2000)
        trade_id, w.next_id = w.next_id, w.next_id + 1
        now = self._clock()
        self._last_time = max(self._last_time, now)
        return Tick(
            exchange=self.exchange,
            symbol=symbol,
            trade_id=trade_id,
            price=f"{w.units * w.tick:f}",
            qty=f"{qty_units * w.step:f}",
            exchange_time=self._last_time,
            local_time=now,
            buyer_maker=rng.random() < 0.5,
        )
