"""The gateway's write-ahead journal: every record is on disk before its trade goes out on ZMQ.

Layout: append-only segment files ``{first_seq:016d}.wal`` under ``$TTQUANT_HOME/gateway-journal``
(:func:`journal_dir`), a new one every ``segment_bytes`` (1 MiB) and at every start (a previous
run's last segment may end in a torn entry; nothing is ever written after it).  One entry::

    u32 length | u32 crc32 | u64 seq | body (length bytes: the record as JSON)

little-endian; the CRC covers ``length``, ``seq`` and the body.  ``seq`` increases by one per
record, across segments and restarts.  The top bit of ``length`` means "the next entry belongs to
the same write" (:meth:`Journal.append_many`): a group is read back whole or not at all, so a crash
in the middle of one ``write()`` cannot leave, say, a fill without its position snapshot.

Durability: :meth:`Journal.append` returns once ``write()`` put the entry in the page cache, which
a process SIGKILL does not lose; a background thread fsyncs every ``fsync_interval`` (0.1 s), so a
power loss or kernel crash loses at most the last ~0.1 s.  An fsync per record would add about
1-5 ms to every order; the page-cache write costs microseconds (``tests/unit/test_journal_bench.py``).

Reading back (:meth:`Journal.open`): an entry cut short by the end of a file is a torn tail
(a crash mid-``write``), ignored with a warning.  An entry whose CRC does not match is corrupt:
logged as an error, counted, skipped (its length still says where the next entry starts); a length
that cannot be right (0, absurd, past the end) ends the reading of that file, also logged.  Neither
is ever fatal.

Hand-over and trimming: the caller reports each record it handed over for good (the enqueuer's
``on_handover``: the broker took it, or the fsynced spool did) with :meth:`Journal.handed_over`.
The background thread keeps ``handed-over`` (the highest seq up to which everything was handed
over; not fsynced: losing it only means replaying more) and deletes whole segments -- never the
one being written -- once every record in them was handed over and, when ``hold_for_checkpoint``,
once :meth:`Journal.checkpoint` says the positions they change were saved elsewhere (the gateway
restores positions from the journal's snapshots, see :mod:`.runner`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import TTQuantError
from ..files import fsync_path

log = logging.getLogger(__name__)

SEGMENT_BYTES = 1 << 20
FSYNC_INTERVAL = 0.1  # s: the power-loss window (a SIGKILL loses nothing that append() returned)
MAX_ENTRY = 16 << 20  # a longer length field is corruption, not a record
_HEADER = struct.Struct("<IIQ")
_CRC_FIELDS = struct.Struct("<IQ")  # length (with the flag), seq
_MORE = 1 << 31  # in length: the next entry is part of the same group
_NAME_RE = re.compile(r"^(\d{16})\.wal$")
_MARK = "handed-over"


class JournalError(TTQuantError):
    """The journal directory cannot be created, written or synced (the message names the path)."""


def journal_dir(home: Path) -> Path:
    """``$TTQUANT_HOME/gateway-journal``."""
    return home / "gateway-journal"


def _os_error(action: str, path: Path, exc: OSError) -> JournalError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return JournalError(f"journal: cannot {action} {path}: {reason}")


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)  # records are flat: ~1 us less


def encode_entry(seq: int, record: dict[str, Any], more: bool = False) -> bytes:
    """One entry's bytes (see module doc); ``more``: the next entry belongs to the same group."""
    body = _ENCODER.encode(record).encode()
    length = len(body) | (_MORE if more else 0)
    return _HEADER.pack(length, zlib.crc32(body, zlib.crc32(_CRC_FIELDS.pack(length, seq))), seq) + body


def encode_group(first_seq: int, records: list[dict[str, Any]]) -> bytes:
    """Entries for ``records`` (seqs from ``first_seq``) that are read back all or none."""
    last = len(records) - 1
    return b"".join(encode_entry(first_seq + i, r, more=i < last) for i, r in enumerate(records))


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    record: dict[str, Any]


@dataclasses.dataclass
class Recovered:
    """What :meth:`Journal.open` found: every readable entry (oldest first), and the hand-over mark."""

    entries: list[Entry]
    handed_over: int
    corrupt: int = 0
    torn: int = 0

    @property
    def to_replay(self) -> list[Entry]:
        """Entries not known to be handed over (replay them in this order)."""
        return [e for e in self.entries if e.seq > self.handed_over]


@dataclasses.dataclass
class _Segment:
    first: int
    path: Path
    last: int  # seq of its last entry; first - 1 when it has none


def read_segment(path: Path) -> tuple[list[Entry], int, int]:
    """``(entries, corrupt, torn)`` of one segment file.  Never raises on bad content.

    A torn tail can end any segment, not only the newest: each start writes a new segment after
    the one a crash cut short."""
    data = path.read_bytes()
    entries: list[Entry] = []
    group: list[Entry] = []  # entries of a group whose last entry has not been read yet
    corrupt = torn = 0
    pos = 0
    while pos < len(data):
        if len(data) - pos < _HEADER.size:
            torn += 1
            break
        flagged, crc, seq = _HEADER.unpack_from(data, pos)
        length, more = flagged & ~_MORE, bool(flagged & _MORE)
        start = pos + _HEADER.size
        if not 2 <= length <= MAX_ENTRY:
            if any(data[pos:]):
                corrupt += 1
                log.error("journal: %s: impossible entry length %d at offset %d; ignoring the rest of the file",
                          path, length, pos)
            else:
                torn += 1  # zeros after a crash: the file was extended, the data never written
            break
        if start + length > len(data):
            torn += 1
            break
        body = data[start:start + length]
        pos = start + length
        if zlib.crc32(body, zlib.crc32(_CRC_FIELDS.pack(flagged, seq))) != crc:
            corrupt += 1
            log.error("journal: %s: entry at offset %d (seq %d) fails its CRC; skipping it%s",
                      path, start - _HEADER.size, seq, " and its group" if group else "")
            group = []
            continue
        try:
            record = json.loads(body)
            if not isinstance(record, dict):
                raise ValueError(f"a record is a JSON object, found {type(record).__name__}")
        except (ValueError, UnicodeDecodeError) as exc:
            corrupt += 1
            log.error("journal: %s: entry seq %d is not a JSON record (%s); skipping it", path, seq, exc)
            group = []
            continue
        group.append(Entry(seq, record))
        if not more:
            entries.extend(group)
            group = []
    if group and not torn:
        torn += 1  # the file ends inside a group: its last entry was never written
    if torn:
        log.warning("journal: %s ends in a torn entry after %d entries (a crash mid-write); ignored",
                    path, len(entries))
    return entries, corrupt, torn


class Journal:
    """Append-only record journal under ``directory`` (see module doc).  One thread appends.

    Constructing touches nothing; :meth:`open` reads what a previous run left and starts a new
    segment (:class:`JournalError` when the directory is unusable).  After an I/O error ``error``
    says why and :meth:`append` refuses until :meth:`recover` succeeds.
    """

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES,
                 fsync_interval: float = FSYNC_INTERVAL, hold_for_checkpoint: bool = False) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync_interval = fsync_interval
        self.hold_for_checkpoint = hold_for_checkpoint
        self.error: str | None = "journal: not opened"
        self._lock = threading.Lock()  # append/roll vs the sync thread
        self._fd = -1
        self._size = 0
        self._dirty = False
        self._to_close: list[int] = []  # rolled segments: fsync, then close (sync thread)
        self._dir_dirty = False
        self._segments: list[_Segment] = []  # oldest first; the last one is being written
        self._next = 1
        self._pending: set[int] = set()  # appended (or replayed), not yet handed over
        self._mark = 0  # written to the hand-over file
        self._checkpoint = 0
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts = {"appended": 0, "handed_over": 0, "fsyncs": 0, "trimmed_segments": 0, "errors": 0}

    # ---- start ---------------------------------------------------------------------------------
    def open(self, next_at_least: int = 1) -> Recovered:
        """Read the previous runs' segments, start a new segment and the sync thread.

        The returned ``to_replay`` entries count as not handed over until :meth:`handed_over` is
        called for them.  New entries get seqs above every one found and at least ``next_at_least``
        (the gateway passes the seq its saved positions include, so that one is never reused).
        Raises :class:`JournalError` when the directory is unusable.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._fail(_os_error("create directory", self.directory, exc)) from exc
        self._segments = []
        mark = self._read_mark()
        entries: list[Entry] = []
        corrupt = torn = 0
        next_seq = max(mark + 1, next_at_least)
        names = sorted(p for p in self._list() if _NAME_RE.match(p.name))
        for path in names:
            first = int(path.name[:16])
            try:
                found, bad, cut = read_segment(path)
                size = path.stat().st_size
            except OSError as exc:
                raise self._fail(_os_error("read", path, exc)) from exc
            entries.extend(found)
            corrupt, torn = corrupt + bad, torn + cut
            last = max((e.seq for e in found), default=first - 1)
            self._segments.append(_Segment(first, path, last))
            next_seq = max(next_seq, last + 1, first + (1 if size else 0))
        entries.sort(key=lambda e: e.seq)
        self._next = next_seq
        recovered = Recovered(entries, mark, corrupt, torn)
        self._pending = {e.seq for e in recovered.to_replay}
        self._mark = mark
        with self._lock:
            self._start_segment()
        self.error = None
        self._thread = threading.Thread(target=self._run, name="ttquant-gateway-journal", daemon=True)
        self._thread.start()
        log.info("journal: %s: %d entries found (%d to replay, %d corrupt, %d torn), next seq %d",
                 self.directory, len(entries), len(recovered.to_replay), corrupt, torn, self._next)
        return recovered

    def _list(self) -> list[Path]:
        try:
            return list(self.directory.iterdir())
        except OSError as exc:
            raise self._fail(_os_error("list", self.directory, exc)) from exc

    def _read_mark(self) -> int:
        try:
            return max(0, int((self.directory / _MARK).read_text().strip() or 0))
        except (OSError, ValueError):
            return 0  # missing or torn: everything found is replayed (duplicates are harmless)

    def _start_segment(self) -> None:
        """Open a new segment starting at ``self._next`` (lock held).  A non-empty file of that name
        (a write that failed part way) is never appended to: the seq skips one instead."""
        path = self.directory / f"{self._next:016d}.wal"
        try:
            while path.exists() and path.stat().st_size:
                self._next += 1
                path = self.directory / f"{self._next:016d}.wal"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise self._fail(_os_error("create segment", path, exc)) from exc
        if self._segments and self._segments[-1].path == path:  # an empty segment of a previous run
            self._segments.pop()
        if self._fd >= 0:
            self._to_close.append(self._fd)
        self._fd, self._size = fd, os.fstat(fd).st_size
        self._segments.append(_Segment(self._next, path, self._next - 1))
        self._dir_dirty = True

    def _fail(self, exc: JournalError) -> JournalError:
        if self.error is None or self.error == "journal: not opened":
            log.error("%s", exc)
        self.error = str(exc)
        self.counts["errors"] += 1
        return exc

    # ---- the order path ------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self.error is None

    @property
    def last_seq(self) -> int:
        """The seq of the newest entry (0 before the first)."""
        return self._next - 1

    def append(self, record: dict[str, Any]) -> int:
        """Write one record (page cache; see module doc); returns its seq.  :class:`JournalError`
        when the journal is broken (and from now on until :meth:`recover`)."""
        return self.append_many([record])[0]

    def append_many(self, records: list[dict[str, Any]]) -> list[int]:
        """Write ``records`` with one ``write()`` (all or, after a crash, none of them readable:
        an entry cut short is a torn tail); returns their seqs.  Errors as :meth:`append`."""
        if self.error is not None:
            raise JournalError(self.error)
        if not records:
            return []
        with self._lock:
            first = self._next
            data = encode_group(first, records)
            if self._size and self._size + len(data) > self.segment_bytes:
                self._start_segment()
                if self._next != first:  # a failed write's file was in the way: seqs moved on
                    first = self._next
                    data = encode_group(first, records)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                # A partial entry may be in the file: nothing more goes after it (recover() rolls).
                raise self._fail(_os_error("write to", self._segments[-1].path, exc)) from exc
            seqs = list(range(first, first + len(records)))
            self._next = first + len(records)
            self._size += len(data)
            self._dirty = True
            self._segments[-1].last = seqs[-1]
            self._pending.update(seqs)
        self.counts["appended"] += len(records)
        return seqs

    def handed_over(self, *seqs: Any) -> None:
        """Record ``seqs`` as handed over for good (thread-safe; from the enqueuer's ``on_handover``)."""
        with self._lock:
            for seq in seqs:
                if seq in self._pending:
                    self._pending.discard(seq)
                    self.counts["handed_over"] += 1

    def checkpoint(self, seq: int) -> None:
        """The positions as of ``seq`` are saved elsewhere (see ``hold_for_checkpoint``)."""
        with self._lock:
            self._checkpoint = max(self._checkpoint, seq)

    @property
    def opened(self) -> bool:
        return self._thread is not None

    def recover(self) -> bool:
        """After an error on an opened journal: try a fresh segment; True (and healthy again) when
        it worked.  (A journal that could not be opened is retried with :meth:`open`.)"""
        if self.error is None:
            return True
        if not self.opened:
            return False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._start_segment()
        except (OSError, JournalError):
            return False
        log.warning("journal: %s is writable again; orders are accepted", self.directory)
        self.error = None
        return True

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pending = len(self._pending)
            segments = len(self._segments)
        return {**self.counts, "pending": pending, "segments": segments, "last_seq": self.last_seq,
                "healthy": self.healthy}

    # ---- the sync thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._closing.wait(self.fsync_interval):
            self.sync()
        self.sync()

    def sync(self) -> None:
        """fsync what was written, record the hand-over mark, delete spent segments.  Errors are logged."""
        try:
            self._sync()
        except OSError as exc:
            self._fail(_os_error("sync", self.directory, exc))

    def _sync(self) -> None:
        with self._lock:
            fd, dirty, self._dirty = self._fd, self._dirty, False
            to_close, self._to_close = self._to_close, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            mark = (min(self._pending) - 1) if self._pending else self._next - 1
            limit = min(mark, self._checkpoint) if self.hold_for_checkpoint else mark
            spent = [s for s in self._segments[:-1] if s.last <= limit]
            for s in spent:
                self._segments.remove(s)
        for old in to_close:
            try:
                os.fsync(old)
            finally:
                os.close(old)
        if dirty and fd >= 0:
            os.fsync(fd)
            self.counts["fsyncs"] += 1
        if dir_dirty:
            fsync_path(self.directory)
        if mark > self._mark:
            tmp = self.directory / f".{_MARK}.tmp"
            tmp.write_text(str(mark))
            os.replace(tmp, self.directory / _MARK)
            self._mark = mark
        for s in spent:
            s.path.unlink(missing_ok=True)
            self.counts["trimmed_segments"] += 1

    def close(self) -> None:
        """Stop the sync thread after a last sync; close the segment.  Idempotent."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(2.0)  # a last fsync takes ms; bounded so a hung disk cannot hold up the stop
        with self._lock:
            fds = [*self._to_close, self._fd] if self._fd >= 0 else list(self._to_close)
            self._to_close, self._fd = [], -1
        for fd in fds:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            with contextlib.suppress(OSError):
                os.close(fd)


def latest_positions(entries: Iterable[Entry]) -> dict[tuple[str, str], tuple[int, dict[str, Any]]]:
    """Per (strategy, symbol), ``(seq, record)`` of the newest ``position`` record among ``entries``."""
    out: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for e in entries:
        r = e.record
        if r.get("kind") == "position" and isinstance(r.get("strategy_id"), str) and isinstance(r.get("symbol"), str):
            key = (r["strategy_id"], r["symbol"])
            if key not in out or out[key][0] < e.seq:
                out[key] = (e.seq, r)
    return out
