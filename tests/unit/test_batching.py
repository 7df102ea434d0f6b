"""PayloadChunker: full chunks, age-expired chunks, drain; the caller's clock is the only clock.

Each chunk comes out as its broker payload, equal to ``chunk_payload`` of the same ticks."""

from __future__ import annotations

from typing import Any

import pytest

from ttquant_tasks.feed.batching import PayloadChunker
from ttquant_tasks.models import Tick, chunk_payload, payload_rows


def tick(i: int, bm: bool | None = None) -> Tick:
    return Tick("sim", "BTCUSDT" if i % 2 else "ETHUSDT", i, f"1.{i:02d}", "0.1", i, i + 1, bm)


def ticks_of(payload: dict[str, Any] | None) -> list[Tick]:
    assert payload is not None
    return list(payload_rows(payload))


def test_full_chunk_is_returned_by_add_and_equals_chunk_payload() -> None:
    c = PayloadChunker(size=3, age_s=10.0)
    assert c.add(tick(1, True), 0.0) is None
    assert c.add(tick(2), 0.1) is None
    out = c.add(tick(3, False), 0.2)
    expected = [tick(1, True), tick(2), tick(3, False)]
    assert out is not None
    assert {**out, "chunk_id": "x"} == {**chunk_payload("sim", expected), "chunk_id": "x"}
    assert ticks_of(out) == expected
    assert len(c) == 0
    assert c.add(tick(4), 0.3) is None
    assert len(c) == 1


def test_every_chunk_has_its_own_id() -> None:
    c = PayloadChunker(size=1, age_s=1.0)
    ids = {p["chunk_id"] for p in (c.add(tick(i), 0.0) for i in range(5)) if p}
    assert len(ids) == 5


def test_due_measures_age_from_the_oldest_tick() -> None:
    c = PayloadChunker(size=100, age_s=1.0)
    c.add(tick(1), 5.0)
    c.add(tick(2), 5.9)
    assert c.due(5.99) is None
    assert ticks_of(c.due(6.0)) == [tick(1), tick(2)]
    assert c.due(100.0) is None  # empty: nothing is ever due
    c.add(tick(3), 7.0)  # a new chunk's age starts at its own first tick
    assert c.due(7.5) is None
    assert ticks_of(c.due(8.0)) == [tick(3)]


def test_drain_returns_whatever_is_pending() -> None:
    c = PayloadChunker(size=10, age_s=1.0)
    assert c.drain() is None
    c.add(tick(1), 0.0)
    assert ticks_of(c.drain()) == [tick(1)]
    assert c.drain() is None


def test_size_one_emits_every_tick() -> None:
    c = PayloadChunker(size=1, age_s=1.0)
    assert [ticks_of(c.add(tick(i), 0.0)) for i in range(3)] == [[tick(0)], [tick(1)], [tick(2)]]


@pytest.mark.parametrize(("size", "age", "match"), [(0, 1.0, "size"), (1, 0.0, "age"), (1, -1.0, "age")])
def test_bad_parameters_are_rejected(size: int, age: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PayloadChunker(size, age)
