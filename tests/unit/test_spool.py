"""Spool: durable FIFO across instances, clear errors on a bad directory, corrupt files set aside."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from ttquant_tasks.errors import TTQuantError
from ttquant_tasks.feed.spool import Spool, SpoolError


def payload(n: int, ticks: int = 2) -> dict[str, Any]:
    return {"v": 1, "exchange": "sim", "chunk_id": f"c{n}", "symbol": ["BTCUSDT"] * ticks,
            "trade_id": list(range(n * 10, n * 10 + ticks))}


def test_fifo_survives_a_new_instance(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool")
    assert len(s) == 0 and s.peek_oldest() is None
    for i in range(3):
        s.append(payload(i, ticks=i + 1))
    assert (len(s), s.pending_ticks()) == (3, 6)

    again = Spool(tmp_path / "spool")
    assert (len(again), again.pending_ticks()) == (3, 6)
    seen = []
    while (item := again.peek_oldest()) is not None:
        key, p = item
        seen.append(p["chunk_id"])
        again.remove(key)
    assert seen == ["c0", "c1", "c2"]
    assert len(Spool(tmp_path / "spool")) == 0
    # numbering continues after the old keys, so a restart never reorders
    again.append(payload(9))
    assert again.keys() == [4]


def test_explicit_keys_order_the_fifo(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(payload(2), seq=20)
    s.append(payload(1), seq=10)
    item = s.peek_oldest()
    assert item is not None and item[1]["chunk_id"] == "c1"
    assert s.next_seq == 21
    with pytest.raises(ValueError, match="in use"):
        s.append(payload(3), seq=10)


def test_unwritable_directory_raises_spool_error_naming_path_and_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    bad = blocker / "spool"  # root ignores chmod, but nobody can create a directory under a file
    s = Spool(bad)  # constructing does not fail: the feed keeps running while the broker is up
    assert len(s) == 0
    with pytest.raises(SpoolError, match="Not a directory") as info:
        s.append(payload(1))
    assert str(bad) in str(info.value)
    assert isinstance(info.value, TTQuantError)
    with pytest.raises(SpoolError, match="a_file"):
        s.check()
    assert len(s) == 0


def test_corrupt_file_is_moved_to_bad_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Spool(tmp_path)
    s.append(payload(1))
    k2 = s.append(payload(2))
    s.append(payload(3))
    victim = next(tmp_path.glob(f"{k2:012d}-*.json"))
    victim.write_bytes(victim.read_bytes()[:15])  # truncated JSON, as after disk trouble

    fresh = Spool(tmp_path)
    order = []
    with caplog.at_level(logging.ERROR):
        while (item := fresh.peek_oldest()) is not None:
            order.append(item[1]["chunk_id"])
            fresh.remove(item[0])
    assert order == ["c1", "c3"]
    assert fresh.corrupt == 1
    assert (tmp_path / "bad" / victim.name).exists()
    assert "corrupt" in caplog.text and victim.name in caplog.text


def test_leftover_temp_file_of_a_crashed_append_is_ignored_and_removed_once_stale(tmp_path: Path) -> None:
    fresh = tmp_path / ".000000000001-5.json.tmp"
    stale = tmp_path / ".000000000002-5.json.tmp"
    for f in (fresh, stale):
        f.write_text('{"v": 1, "sym')
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    s = Spool(tmp_path)
    assert len(s) == 0
    assert fresh.exists()  # maybe a live writer's (another process shares the directory)
    assert not stale.exists()


def test_remove_of_unknown_key_is_ignored(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.remove(12345)
    assert len(s) == 0
