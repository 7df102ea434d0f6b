"""A recorded session (:mod:`.record` format) played back as ticks, through the live parser.

Frames go through :func:`~.binance.parse_frame` exactly as received, and a :class:`GapTracker`
drops the overlap duplicates a rotation leaves in a recording, so a replay stores what the live
feed stored.  Gaps in a recording are counted and logged, never backfilled (a replay is offline).
Bad frames are counted per kind and skipped, as live.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..models import Tick
from .binance import FrameError, parse_frame
from .gaps import GapTracker
from .record import replay

log = logging.getLogger(__name__)


class Playback:
    """Iterate to get the recording's ticks; ``speed`` None: as fast as possible, else recorded pace / speed.

    Each tick keeps its recorded receive time as ``local_time`` (ns, UTC), so a replay reproduces the
    rows the live feed stored.  :meth:`close` (any thread) ends a paced replay early.
    """

    def __init__(self, path: str | Path, speed: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"recording not found: {self.path}")
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0 (or None for as fast as possible)")
        self.speed = speed
        self.counters: Counter[str] = Counter()
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def __iter__(self) -> Iterator[Tick]:
        tracker = GapTracker()
        for recv_ns, raw in replay(self.path, self.speed, sleep=self._sleep):
            if self._stop.is_set():
                break
            self.counters["frames"] += 1
            try:
                parsed = parse_frame(raw, recv_ns)
            except FrameError as exc:
                self.counters[f"frame_error.{exc.kind}"] += 1
                continue
            if not isinstance(parsed, Tick):
                self.counters[f"other.{type(parsed).__name__}"] += 1
                continue
            verdict = tracker.observe(parsed.symbol, parsed.trade_id)
            if verdict.kind == "duplicate":
                self.counters["duplicates"] += 1
                continue
            if verdict.kind == "gap":
                self.counters["gap_ids"] += verdict.to_id - verdict.from_id + 1
                log.warning("replay %s: trades %d..%d are not in the recording", parsed.symbol,
                            verdict.from_id, verdict.to_id)
            self.counters["ticks"] += 1
            yield parsed
        log.info("replay of %s done: %s", self.path, dict(self.counters))
