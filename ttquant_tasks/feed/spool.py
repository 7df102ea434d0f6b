"""A crash-safe on-disk FIFO of chunk payloads, for when the broker cannot take them.

One JSON file per chunk, named ``{seq:012d}-{ticks}.json``: ``seq`` orders the FIFO, ``ticks`` lets
:meth:`Spool.pending_ticks` answer without reading every file.  A file is written under a temporary
name, fsynced, atomically renamed and the directory fsynced: after :meth:`Spool.append` returns the
chunk survives a crash or power loss, and a crash mid-write leaves only a ``.tmp`` file (ignored, and
removed by a later start once stale; the chunk was never acknowledged as spooled).  A file that
does not parse (disk trouble, hand edits) is moved to ``bad/`` and logged, never fatal.  Thread-safe.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import TTQuantError
from ..files import fsync_path
from ..models import payload_len

log = logging.getLogger(__name__)

_STALE_TMP_S = 300.0
_NAME_RE = re.compile(r"^(\d{12,})-(\d+)\.json$")


class SpoolError(TTQuantError):
    """The spool directory cannot be written or read (not a directory, permissions, disk full)."""


def _os_error(action: str, path: Path, exc: OSError) -> SpoolError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return SpoolError(f"spool: cannot {action} {path}: {reason}")


class Spool:
    """FIFO of chunk payloads under ``directory``; keys are the integer sequence numbers.

    Constructing never fails on a bad directory (the feed must keep running and publish while the
    broker is up); :meth:`append` raises :class:`SpoolError`, and :meth:`check` reports it up front.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.bad_dir = self.directory / "bad"
        self.corrupt = 0
        self._lock = threading.Lock()
        self._seqs: list[int] = []  # sorted
        self._ticks: dict[int, int] = {}
        self._next = 1
        self._scan()

    def _scan(self) -> None:
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return  # missing or unreadable: empty; append/check say why
        for e in entries:
            if e.name.endswith(".tmp"):
                # An append that crashed before its rename.  Only old ones: another Spool on the same
                # directory (``ttquant status``) must not delete a live writer's temp file.
                with contextlib.suppress(OSError):
                    if time.time() - e.stat().st_mtime > _STALE_TMP_S:
                        os.unlink(e.path)
                continue
            m = _NAME_RE.match(e.name)
            if m:
                seq = int(m.group(1))
                self._ticks[seq] = int(m.group(2))
        self._seqs = sorted(self._ticks)
        self._next = (self._seqs[-1] + 1) if self._seqs else 1

    @property
    def next_seq(self) -> int:
        """The sequence number :meth:`append` gives the next chunk when none is given."""
        with self._lock:
            return self._next

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}-{self._ticks[seq]}.json"

    def check(self) -> None:
        """Raise :class:`SpoolError` when the directory cannot be created or written."""
        self._mkdir()
        probe = self.directory / ".probe.tmp"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise _os_error("write to", self.directory, exc) from exc

    def _mkdir(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error("create directory", self.directory, exc) from exc

    def append(self, payload: dict[str, Any], seq: int | None = None) -> int:
        """Persist ``payload`` durably; returns its key.  ``seq`` places it in the FIFO (default: last).

        An explicit ``seq`` lets the enqueuer keep submission order when chunks reach the spool from
        two threads; it must not be in use.  Raises :class:`SpoolError` on any I/O failure.
        """
        data = json.dumps(payload, separators=(",", ":")).encode()
        n = payload_len(payload)
        with self._lock:
            if seq is None:
                seq = self._next
            if seq in self._ticks:
                raise ValueError(f"spool key {seq} is already in use")
            self._next = max(self._next, seq + 1)
        name = f"{seq:012d}-{n}.json"
        tmp = self.directory / f".{name}.tmp"
        final = self.directory / name
        self._mkdir()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            fsync_path(self.directory)  # the rename is durable only once the entry is on disk
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _os_error("write chunk to", final, exc) from exc
        with self._lock:
            self._ticks[seq] = n
            bisect.insort(self._seqs, seq)
        return seq

    def peek_oldest(self) -> tuple[int, dict[str, Any]] | None:
        """``(key, payload)`` of the oldest chunk, or None when empty.  Corrupt files go to ``bad/``."""
        while True:
            with self._lock:
                if not self._seqs:
                    return None
                seq = self._seqs[0]
            payload = self.read(seq)
            if payload is not None:
                return seq, payload
            # vanished or corrupt: forgotten (or moved aside), so the next one is the oldest now

    def read(self, key: int) -> dict[str, Any] | None:
        """The payload of chunk ``key``; None when the key is unknown, the file vanished (forgotten)
        or is corrupt (moved to ``bad/``).  Raises :class:`SpoolError` when it cannot be read."""
        with self._lock:
            if key not in self._ticks:
                return None
            path = self._path(key)
        try:
            payload = json.loads(path.read_bytes())
            if not isinstance(payload, dict):
                raise ValueError(f"a chunk is a JSON object, found {type(payload).__name__}")
            return payload
        except FileNotFoundError:
            log.warning("spool: chunk %s vanished from %s; skipping it", path.name, self.directory)
            self._forget(key)
        except (ValueError, UnicodeDecodeError) as exc:
            self._quarantine(key, path, exc)
        except OSError as exc:
            raise _os_error("read", path, exc) from exc
        return None

    def _quarantine(self, seq: int, path: Path, exc: Exception) -> None:
        self.corrupt += 1
        log.error("spool: chunk file %s is corrupt (%s); moving it to %s", path, exc, self.bad_dir)
        try:
            self.bad_dir.mkdir(exist_ok=True)
            os.replace(path, self.bad_dir / path.name)
        except OSError as move_exc:
            raise _os_error("move corrupt chunk aside from", path, move_exc) from move_exc
        self._forget(seq)

    def _forget(self, seq: int) -> None:
        with self._lock:
            if self._ticks.pop(seq, None) is not None:
                self._seqs.remove(seq)

    def remove(self, key: int) -> None:
        """Delete chunk ``key`` (after the broker took it).  Unknown keys are ignored."""
        with self._lock:
            if key not in self._ticks:
                return
            path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error("remove", path, exc) from exc
        self._forget(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seqs)

    def pending_ticks(self) -> int:
        """Ticks in all spooled chunks (from the file names; no file is read)."""
        with self._lock:
            return sum(self._ticks.values())

    def keys(self) -> list[int]:
        """Keys of the spooled chunks, oldest first."""
        with self._lock:
            return list(self._seqs)
