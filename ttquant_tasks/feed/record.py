"""Record raw websocket frames to a JSON-lines file and replay them.

One line per frame: ``{"t": <receive time, ns since epoch UTC>, "f": "<raw frame text>"}``.
A path ending in ``.gz`` is gzip-compressed.  Frames are stored verbatim, so a replay through
:func:`ttquant_tasks.feed.binance.parse_frame` yields exactly what the live feed parsed.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

from ..errors import PayloadError


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return cast(IO[str], gzip.open(path, mode + "t", encoding="utf-8"))
    return open(path, mode, encoding="utf-8")  # noqa: SIM115 - closed by the owner


class Recorder:
    """Appends frames to ``path``; thread-safe; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = _open(self.path, "a")
        self._lock = threading.Lock()

    def write(self, recv_ns: int, raw: str | bytes) -> None:
        """Record one frame received at ``recv_ns``; bytes are decoded as UTF-8 (invalid bytes replaced)."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = json.dumps({"t": recv_ns, "f": text}, separators=(",", ":"))
        with self._lock:
            self._fh.write(line + "\n")

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _entry(line: str, lineno: int) -> tuple[int, str]:
    try:
        obj: Any = json.loads(line)
    except ValueError as exc:
        raise PayloadError(f"recording line {lineno}: not JSON ({exc})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), int) or not isinstance(obj.get("f"), str):
        raise PayloadError(f"recording line {lineno}: expected {{'t': int, 'f': str}}")
    return obj["t"], obj["f"]


def replay(
    path: str | Path,
    speed: float | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[tuple[int, str]]:
    """Yield ``(recv_ns, raw)`` in file order.

    ``speed`` None replays as fast as possible; otherwise the recorded spacing divided by ``speed``
    (2.0 = twice as fast).  Blank lines are skipped; a corrupt line raises :class:`PayloadError`
    naming its line number.
    """
    if speed is not None and speed <= 0:
        raise ValueError("speed must be > 0 or None")
    first_t: int | None = None
    start = 0.0
    with _open(Path(path), "r") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            t, raw = _entry(line, lineno)
            if speed is not None:
                if first_t is None:
                    first_t, start = t, clock()
                delay = (t - first_t) / 1e9 / speed - (clock() - start)
                if delay > 0:
                    sleep(delay)
            yield t, raw
