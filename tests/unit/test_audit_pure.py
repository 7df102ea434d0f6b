"""Pure parts of ``ttquant audit``: time parsing, exit status, rendering."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from ttquant_tasks.commands.market import exit_status, iso_time, render
from ttquant_tasks.storage.audit import SymbolAudit
from ttquant_tasks.storage.gaps import KnownGap


def audit(symbol: str = "BTCUSDT", missing: list[tuple[int, int]] | None = None, dups: int = 0) -> SymbolAudit:
    missing = missing or []
    gone = sum(b - a + 1 for a, b in missing)
    return SymbolAudit(symbol, 10 + dups, 1, 10 + gone, gone, dups, missing, [(3, dups + 1)] if dups else [], [])


@pytest.mark.parametrize(("raw", "expected"), [
    ("2025-01-31", datetime(2025, 1, 31, tzinfo=UTC)),
    ("2025-01-31T12:30:00Z", datetime(2025, 1, 31, 12, 30, tzinfo=UTC)),
    ("2025-01-31T14:30:00+02:00", datetime(2025, 1, 31, 12, 30, tzinfo=UTC)),
])
def test_iso_time_is_aware_and_utc_by_default(raw: str, expected: datetime) -> None:
    assert iso_time(raw) == expected


@pytest.mark.parametrize("raw", ["yesterday", "", "2025-13-01", "1700000000"])
def test_iso_time_refuses_other_text(raw: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="ISO time"):
        iso_time(raw)


def test_exit_status_is_non_zero_for_gap_duplicate_or_missing_symbol() -> None:
    assert exit_status([audit()], ["BTCUSDT"]) == 0
    assert exit_status([], None) == 0
    assert exit_status([audit(missing=[(4, 5)])], None) == 1
    assert exit_status([audit(dups=1)], None) == 1
    assert exit_status([audit()], ["BTCUSDT", "ETHUSDT"]) == 1


def test_render_lists_ranges_duplicates_known_gaps_and_absent_symbols() -> None:
    gap = KnownGap("binance", "BTCUSDT", 4, 5, "418 ban", datetime(2025, 1, 1, tzinfo=UTC), None)
    x = audit(missing=[(4, 5)], dups=1)
    x = SymbolAudit(**{**{f: getattr(x, f) for f in x.__slots__}, "known_gaps": [gap]})
    text = render([x], ["BTCUSDT", "ETHUSDT"])
    assert "BTCUSDT: 11 rows, ids 1..12, 2 missing, 1 duplicate rows, 1 known gaps: GAPS/DUPLICATES" in text
    assert "  missing 4..5 (2 ids)" in text and "  duplicate id 3 x2" in text
    assert "  known gap 4..5 open (detected 2025-01-01T00:00:00+00:00): 418 ban" in text
    assert "ETHUSDT: no rows in the window: NOT CLEAN" in text
