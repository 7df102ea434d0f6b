"""Chunker: full chunks, age-expired chunks, drain; the caller's clock is the only clock."""

from __future__ import annotations

import pytest

from ttquant_tasks.feed.batching import Chunker
from ttquant_tasks.models import Tick


def tick(i: int) -> Tick:
    return Tick("sim", "BTCUSDT", i, "1.00", "0.1", i, i)


def test_full_chunk_is_returned_by_add_and_chunker_restarts() -> None:
    c = Chunker(size=3, age_s=10.0)
    assert c.add(tick(1), 0.0) is None
    assert c.add(tick(2), 0.1) is None
    assert c.add(tick(3), 0.2) == [tick(1), tick(2), tick(3)]
    assert len(c) == 0
    assert c.add(tick(4), 0.3) is None
    assert len(c) == 1


def test_due_measures_age_from_the_oldest_tick() -> None:
    c = Chunker(size=100, age_s=1.0)
    c.add(tick(1), 5.0)
    c.add(tick(2), 5.9)
    assert c.due(5.99) is None
    assert c.due(6.0) == [tick(1), tick(2)]
    assert c.due(100.0) is None  # empty: nothing is ever due
    c.add(tick(3), 7.0)  # a new chunk's age starts at its own first tick
    assert c.due(7.5) is None
    assert c.due(8.0) == [tick(3)]


def test_drain_returns_whatever_is_pending() -> None:
    c = Chunker(size=10, age_s=1.0)
    assert c.drain() is None
    c.add(tick(1), 0.0)
    assert c.drain() == [tick(1)]
    assert c.drain() is None


def test_size_one_emits_every_tick() -> None:
    c = Chunker(size=1, age_s=1.0)
    assert [c.add(tick(i), 0.0) for i in range(3)] == [[tick(0)], [tick(1)], [tick(2)]]


@pytest.mark.parametrize(("size", "age", "match"), [(0, 1.0, "size"), (1, 0.0, "age"), (1, -1.0, "age")])
def test_bad_parameters_are_rejected(size: int, age: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Chunker(size, age)
