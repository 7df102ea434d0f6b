"""GapTracker: new / duplicate / gap per symbol, seeding, late acceptance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttquant_tasks.feed.gaps import DUPLICATE, NEW, GapTracker, Verdict


def test_consecutive_ids_are_new_and_repeats_duplicates() -> None:
    g = GapTracker()
    assert [g.observe("BTCUSDT", i) for i in (5, 6, 7)] == [NEW, NEW, NEW]
    assert g.observe("BTCUSDT", 7) == DUPLICATE
    assert g.observe("BTCUSDT", 3) == DUPLICATE
    assert g.last("BTCUSDT") == 7


def test_jump_reports_the_missing_inclusive_range_and_keeps_the_trade() -> None:
    g = GapTracker()
    g.observe("BTCUSDT", 10)
    v = g.observe("BTCUSDT", 14)
    assert v == Verdict("gap", 11, 13) and v.is_new
    assert g.observe("BTCUSDT", 15) == NEW
    assert g.observe("BTCUSDT", 12) == DUPLICATE  # live path never goes backwards


def test_symbols_are_independent() -> None:
    g = GapTracker()
    g.observe("BTCUSDT", 100)
    assert g.observe("ETHUSDT", 5) == NEW
    assert g.observe("BTCUSDT", 101) == NEW
    assert g.last("XRPUSDT") is None


def test_seed_from_database_reports_gap_since_last_run() -> None:
    g = GapTracker()
    g.seed("BTCUSDT", 999)
    assert g.observe("BTCUSDT", 999) == DUPLICATE  # already stored
    assert g.observe("BTCUSDT", 1003) == Verdict("gap", 1000, 1002)
    g.seed("ETHUSDT", 41)
    assert g.observe("ETHUSDT", 42) == NEW
    g.seed("XRPUSDT", None)  # nothing stored yet: first trade is just new
    assert g.observe("XRPUSDT", 7) == NEW


def test_accept_late_takes_an_id_inside_a_gap_once() -> None:
    g = GapTracker(window=8)
    g.observe("BTCUSDT", 10)
    g.observe("BTCUSDT", 14)
    assert g.accept_late("BTCUSDT", 12) is True
    assert g.accept_late("BTCUSDT", 12) is False
    assert g.accept_late("BTCUSDT", 14) is False  # seen live
    assert g.accept_late("BTCUSDT", 15) is False  # future: live path only
    assert g.accept_late("ETHUSDT", 1) is False  # unknown symbol


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        GapTracker(window=0)


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=80))
def test_any_sequence_yields_each_id_at_most_once_and_gaps_cover_the_holes(ids: list[int]) -> None:
    """Kept ids plus reported gap ranges cover first..max exactly once, whatever order ids arrive in."""
    g = GapTracker()
    kept: list[int] = []
    missing: list[int] = []
    for i in ids:
        v = g.observe("S", i)
        if v.is_new:
            kept.append(i)
        if v.kind == "gap":
            missing.extend(range(v.from_id, v.to_id + 1))
    assert len(kept) == len(set(kept))
    assert kept == sorted(kept)
    if kept:
        assert sorted(kept + missing) == list(range(kept[0], kept[-1] + 1))
