"""The feed's figures in a small JSON file, so ``ttquant up``/``status`` in another process can show them.

The file (``$TTQUANT_HOME/run/feed.json``) holds counters, per-second rates over the last interval
and the wall time it was written (``time``: seconds since the epoch, UTC).  It is replaced
atomically (temp file + rename), so a reader never sees half of it; no fsync: losing the last
figures in a crash is harmless.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_stats(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically replace ``path`` with ``data`` as JSON (creating the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(data), sort_keys=True))
    os.replace(tmp, path)


def read_stats(path: Path) -> dict[str, Any] | None:
    """The last figures written to ``path``, or None when there are none (or they do not parse)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class StatsFile:
    """Writes counters and their per-second rates to ``path`` at most every ``interval`` seconds.

    I/O errors are logged once and otherwise ignored: figures must never stop the feed.
    """

    def __init__(self, path: Path, interval: float = 1.0, wall: Callable[[], float] = time.time) -> None:
        self.path = path
        self.interval = interval
        self._wall = wall
        self._last_t: float | None = None
        self._last: dict[str, float] = {}
        self._warned = False

    def due(self, now: float) -> bool:
        """True when ``interval`` has passed since the last write (``now``: monotonic seconds)."""
        return self._last_t is None or now - self._last_t >= self.interval

    def update(self, counts: Mapping[str, Any], now: float, force: bool = False) -> bool:
        """Write ``counts`` when :meth:`due` (or ``force``); returns whether it wrote."""
        if not force and not self.due(now):
            return False
        dt = (now - self._last_t) if self._last_t is not None else 0.0
        rates = {k: round((v - self._last.get(k, 0)) / dt, 1)
                 for k, v in counts.items() if dt > 0 and isinstance(v, int | float) and not isinstance(v, bool)}
        self._last_t = now
        self._last = {k: v for k, v in counts.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        try:
            write_stats(self.path, {"counts": dict(counts), "rates_per_s": rates, "time": self._wall(),
                                    "pid": os.getpid()})
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write stats to %s: %s", self.path, exc)
                self._warned = True
            return False
        return True
