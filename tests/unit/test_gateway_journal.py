"""The gateway's write-ahead journal: append, replay, trim, torn tails, corruption, unusable paths."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ttquant_tasks.gateway import journal as journal_mod
from ttquant_tasks.gateway.journal import Journal, JournalError, encode_entry, latest_positions, read_segment


def rec(n: int, kind: str = "trade") -> dict[str, Any]:
    return {"kind": kind, "version": 1, "chunk_id": f"{kind}:{n}", "n": n, "price": "64321.12345678"}


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Journal]]:
    made: list[Journal] = []

    def factory(**kwargs: Any) -> Journal:
        kwargs.setdefault("fsync_interval", 0.02)
        j = Journal(tmp_path / "journal", **kwargs)
        made.append(j)
        return j

    yield factory
    for j in made:
        j.close()


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def test_append_then_replay_everything_not_handed_over_in_order(make: Callable[..., Journal]) -> None:
    j = make()
    assert j.open().entries == []
    seqs = [j.append(rec(i)) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    # no close: as after a SIGKILL, the entries are only in the page cache
    again = make().open()
    assert [(e.seq, e.record["n"]) for e in again.to_replay] == [(i + 1, i) for i in range(5)]
    assert again.entries[0].record == rec(0)


def test_sequence_numbers_continue_across_restarts(make: Callable[..., Journal]) -> None:
    j = make()
    j.open()
    for i in range(3):
        j.append(rec(i))
    j.close()
    j2 = make()
    j2.open()
    assert j2.append(rec(3)) == 4
    j2.close()
    j3 = make()  # the last segment holds one entry; nothing was handed over
    assert [e.seq for e in j3.open().to_replay] == [1, 2, 3, 4]
    assert j3.append(rec(4)) == 5


def test_sequence_continues_after_everything_was_trimmed(make: Callable[..., Journal]) -> None:
    j = make(segment_bytes=300)
    j.open()
    for i in range(10):
        j.handed_over(j.append(rec(i)))
    j.close()
    assert len(segments(j.directory)) == 1  # only the segment being written survives a clean stop
    j2 = make()
    assert j2.open().to_replay == []
    assert j2.append(rec(10)) == 11


def test_open_respects_a_lower_bound_for_the_next_seq(make: Callable[..., Journal]) -> None:
    j = make()
    j.open(next_at_least=42)
    assert j.append(rec(0)) == 42


def test_handed_over_entries_are_not_replayed_and_spent_segments_are_deleted(
        make: Callable[..., Journal]) -> None:
    j = make(segment_bytes=400)
    j.open()
    seqs = [j.append(rec(i)) for i in range(30)]
    assert len(segments(j.directory)) > 3
    for s in seqs[:20]:
        j.handed_over(s)
    j.handed_over(seqs[25])  # out of order: 21..25 are still pending, so 26 is replayed too
    j.sync()
    assert (j.directory / "handed-over").read_text() == "20"
    remaining = segments(j.directory)
    first_kept = int(remaining[0].name[:16])
    assert first_kept <= 21 and j.stats()["trimmed_segments"] >= 1
    again = make().open()
    assert [e.seq for e in again.to_replay] == list(range(21, 31))


def test_replayed_entries_are_pending_until_handed_over(make: Callable[..., Journal]) -> None:
    j = make(segment_bytes=300)
    j.open()
    for i in range(10):
        j.append(rec(i))
    j.close()
    j2 = make(segment_bytes=300)
    replay = j2.open().to_replay
    assert len(replay) == 10
    j2.sync()
    assert len(segments(j2.directory)) > 2  # nothing handed over: nothing deleted
    for e in replay:
        j2.handed_over(e.seq)
    j2.sync()
    assert len(segments(j2.directory)) == 1  # the new, empty segment
    assert make().open().to_replay == []


def test_checkpoint_holds_segments_back(make: Callable[..., Journal]) -> None:
    j = make(segment_bytes=300, hold_for_checkpoint=True)
    j.open()
    for i in range(10):
        j.handed_over(j.append(rec(i, "position")))
    j.sync()
    assert len(segments(j.directory)) > 2  # handed over, but positions not saved elsewhere yet
    j.checkpoint(j.last_seq)
    j.sync()
    assert len(segments(j.directory)) == 1


def test_the_sync_thread_fsyncs_in_the_background(make: Callable[..., Journal]) -> None:
    j = make()
    j.open()
    j.append(rec(1))
    wait_for(lambda: j.stats()["fsyncs"] >= 1, "a background fsync")


def closed_segment(make: Callable[..., Journal], n: int) -> tuple[Journal, Path]:
    """A journal of ``n`` records (``rec(0)``..), closed; it and its one segment file."""
    j = make()
    j.open()
    for i in range(n):
        j.append(rec(i))
    j.close()
    (seg,) = segments(j.directory)
    return j, seg


def test_torn_tail_is_ignored_and_writing_goes_on_in_a_new_segment(
        make: Callable[..., Journal], caplog: pytest.LogCaptureFixture) -> None:
    j, seg = closed_segment(make, 3)
    os.truncate(seg, seg.stat().st_size - 5)  # the last entry cut short, as by a crash mid-write
    with caplog.at_level(logging.WARNING):
        j2 = make()
        got = j2.open()
    assert [e.seq for e in got.entries] == [1, 2] and got.torn == 1 and got.corrupt == 0
    assert "torn" in caplog.text
    assert j2.append(rec(9)) == 3  # the torn entry never fully existed; a new segment takes its seq
    j2.close()
    assert [e.seq for e in make().open().entries] == [1, 2, j2.last_seq]


def test_zero_filled_tail_is_a_torn_tail_not_corruption(make: Callable[..., Journal]) -> None:
    _, seg = closed_segment(make, 1)
    with open(seg, "ab") as f:
        f.write(b"\0" * 64)
    got = make().open()
    assert [e.seq for e in got.entries] == [1] and (got.torn, got.corrupt) == (1, 0)


def test_corrupt_entry_is_logged_and_skipped_never_fatal(
        make: Callable[..., Journal], caplog: pytest.LogCaptureFixture) -> None:
    _, seg = closed_segment(make, 3)
    data = bytearray(seg.read_bytes())
    second = len(encode_entry(1, rec(0)))
    data[second + 30] ^= 0xFF  # a byte inside the second entry's body
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        got = make().open()
    assert [e.seq for e in got.entries] == [1, 3] and got.corrupt == 1
    assert "fails its CRC" in caplog.text and str(seg) in caplog.text


def test_impossible_length_stops_reading_that_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seg = tmp_path / "0000000000000001.wal"
    seg.write_bytes(encode_entry(1, rec(0)) + b"\xff\xff\xff\x7f" + b"x" * 40)
    with caplog.at_level(logging.ERROR):
        entries, corrupt, torn = read_segment(seg)
    assert [e.seq for e in entries] == [1] and corrupt == 1 and torn == 0
    assert "impossible entry length" in caplog.text


def test_unwritable_directory_raises_naming_the_path(make: Callable[..., Journal], tmp_path: Path) -> None:
    (tmp_path / "journal").write_text("a file where the directory should be")
    j = make()
    with pytest.raises(JournalError, match=str(tmp_path / "journal")):
        j.open()
    assert not j.healthy and not j.opened and j.error and str(tmp_path / "journal") in j.error
    with pytest.raises(JournalError):
        j.append(rec(0))
    (tmp_path / "journal").unlink()
    j.open()
    assert j.healthy and j.append(rec(0)) == 1


def test_write_failure_refuses_until_recovered(make: Callable[..., Journal],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    j = make()
    j.open()
    j.append(rec(0))
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal_mod.os, "write", full)
    with pytest.raises(JournalError, match="No space left"):
        j.append(rec(1))
    assert not j.healthy
    monkeypatch.setattr(journal_mod.os, "write", real_write)
    with pytest.raises(JournalError):
        j.append(rec(2))  # refused until recover() started a fresh segment
    assert j.recover() and j.healthy
    seq = j.append(rec(3))
    j.close()
    assert [e.record["n"] for e in make().open().entries] == [0, 3] and seq == 2


def test_partial_write_is_never_appended_to(make: Callable[..., Journal], monkeypatch: pytest.MonkeyPatch) -> None:
    j = make()
    j.open()
    real_write = os.write
    calls = {"n": 0}

    def half_then_fail(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:10])
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(journal_mod.os, "write", half_then_fail)
    with pytest.raises(JournalError):
        j.append(rec(0))
    monkeypatch.setattr(journal_mod.os, "write", real_write)
    assert j.recover()
    j.append(rec(1))
    j.close()
    got = make().open()  # the half entry was never appended: its segment held nothing and went
    assert [(e.seq, e.record["n"]) for e in got.entries] == [(2, 1)] and got.corrupt == 0


def test_latest_positions_per_key_by_seq(make: Callable[..., Journal]) -> None:
    j = make()
    j.open()
    for qty in ("1", "2", "3"):
        j.append({"kind": "position", "strategy_id": "s", "symbol": "BTCUSDT", "position": qty})
        j.append(rec(0))
    j.append({"kind": "position", "strategy_id": "t", "symbol": "BTCUSDT", "position": "9"})
    latest = latest_positions(make().open().entries)
    assert {k: (s, r["position"]) for k, (s, r) in latest.items()} == {
        ("s", "BTCUSDT"): (5, "3"), ("t", "BTCUSDT"): (7, "9")}


def test_a_group_cut_short_is_dropped_whole(make: Callable[..., Journal]) -> None:
    j = make()
    j.open()
    assert j.append_many([rec(0)]) == [1]
    assert j.append_many([rec(1), rec(2, "position"), rec(3, "order")]) == [2, 3, 4]
    j.close()
    (seg,) = segments(j.directory)
    whole = make().open()
    assert [e.seq for e in whole.entries] == [1, 2, 3, 4]
    # a crash mid-write: the group's last entry never made it, its first ones did
    sizes = [len(encode_entry(1, rec(0))), len(encode_entry(2, rec(1))), len(encode_entry(3, rec(2, "position")))]
    os.truncate(seg, sum(sizes))
    got = make().open()
    assert [e.seq for e in got.entries] == [1] and got.torn == 1
