"""Trade-id audit of ``market_data``: per symbol rows, first/last id, missing id ranges, duplicates.

Binance trade ids increase by one per symbol, so within a time window the stored ids of a symbol
should be ``first..last`` with each id once.  The queries are plain SQL with window functions
(``lag``), run on the database (a read replica is fine): nothing is loaded into Python but the
answer.  The window ``[since, until)`` bounds ``time`` (exchange trade time, timestamptz UTC), which
lets TimescaleDB/partition pruning skip other days.  Read-only.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .engine import db_errors
from .gaps import KnownGap, list_gaps

LIST_LIMIT = 1000  # ranges / duplicate ids listed per symbol (the counts are always complete)

# {where} is filled with fixed SQL only (never user input); values are bound parameters.
_WINDOW = """
WITH w AS (
    SELECT symbol, trade_id FROM market_data
    WHERE exchange = :exchange AND time >= :since AND time < :until {where}
)
"""
_SUMMARY = """
SELECT symbol, count(*) AS rows, count(DISTINCT trade_id) AS distinct_ids,
       min(trade_id) AS first_id, max(trade_id) AS last_id
FROM w GROUP BY symbol ORDER BY symbol
"""
_MISSING = """
SELECT symbol, prev + 1 AS from_id, trade_id - 1 AS to_id FROM (
    SELECT symbol, trade_id, lag(trade_id) OVER (PARTITION BY symbol ORDER BY trade_id) AS prev
    FROM (SELECT DISTINCT symbol, trade_id FROM w) AS d
) AS x
WHERE trade_id > prev + 1
ORDER BY symbol, from_id
"""
_DUPLICATES = """
SELECT symbol, trade_id, count(*) AS copies FROM w
GROUP BY symbol, trade_id HAVING count(*) > 1
ORDER BY symbol, trade_id
"""


@dataclasses.dataclass(frozen=True, slots=True)
class SymbolAudit:
    """The audit of one symbol.  ``missing_ids`` and ``duplicate_rows`` are exact; the lists are capped
    at :data:`LIST_LIMIT` entries.  ``known_gaps`` are the recorded gaps overlapping ``first_id..last_id``."""

    symbol: str
    rows: int
    first_id: int
    last_id: int
    missing_ids: int
    duplicate_rows: int  # rows beyond the first of each trade id
    missing: list[tuple[int, int]]  # inclusive ranges
    duplicates: list[tuple[int, int]]  # (trade_id, copies)
    known_gaps: list[KnownGap]

    @property
    def clean(self) -> bool:
        return self.missing_ids == 0 and self.duplicate_rows == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "rows": self.rows, "first_id": self.first_id, "last_id": self.last_id,
            "missing_ids": self.missing_ids, "duplicate_rows": self.duplicate_rows,
            "missing": [list(r) for r in self.missing], "duplicates": [list(d) for d in self.duplicates],
            "known_gaps": [{"from_id": g.from_id, "to_id": g.to_id, "reason": g.reason,
                            "detected_at": g.detected_at.isoformat(),
                            "filled_at": g.filled_at.isoformat() if g.filled_at else None}
                           for g in self.known_gaps],
            "clean": self.clean,
        }


def audit_trades(engine: sa.Engine, exchange: str, since: datetime, until: datetime,
                 symbols: list[str] | None = None, *, with_known_gaps: bool = True) -> list[SymbolAudit]:
    """Audit ``exchange``'s trades with ``since <= time < until`` (aware datetimes), per symbol.

    ``symbols`` None audits every symbol with rows in the window; a requested symbol without rows
    is absent from the result (the caller decides whether that is an error).
    """
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since/until must be timezone-aware")
    params: dict[str, Any] = {"exchange": exchange, "since": since, "until": until}
    where = ""
    if symbols is not None:
        where, params["symbols"] = "AND symbol = ANY(:symbols)", list(symbols)
    head = _WINDOW.format(where=where)
    missing: dict[str, list[tuple[int, int]]] = {}
    dups: dict[str, list[tuple[int, int]]] = {}
    with db_errors("audit_trades"), engine.connect() as conn:
        summary = list(conn.execute(sa.text(head + _SUMMARY), params))
        for sym, a, b in conn.execute(sa.text(head + _MISSING), params):
            lst = missing.setdefault(sym, [])
            if len(lst) < LIST_LIMIT:
                lst.append((int(a), int(b)))
        for sym, tid, copies in conn.execute(sa.text(head + _DUPLICATES), params):
            lst = dups.setdefault(sym, [])
            if len(lst) < LIST_LIMIT:
                lst.append((int(tid), int(copies)))
    known = list_gaps(engine, exchange, [str(r.symbol) for r in summary]) if with_known_gaps and summary else []
    out = []
    for r in summary:
        first, last, rows, distinct = int(r.first_id), int(r.last_id), int(r.rows), int(r.distinct_ids)
        out.append(SymbolAudit(
            symbol=str(r.symbol), rows=rows, first_id=first, last_id=last,
            missing_ids=(last - first + 1) - distinct, duplicate_rows=rows - distinct,
            missing=missing.get(r.symbol, []), duplicates=dups.get(r.symbol, []),
            known_gaps=[g for g in known if g.symbol == r.symbol and g.to_id >= first and g.from_id <= last],
        ))
    return out


_HOLES = """
SELECT prev + 1 AS from_id, trade_id - 1 AS to_id FROM (
    SELECT trade_id, lag(trade_id) OVER (ORDER BY trade_id) AS prev
    FROM (SELECT DISTINCT trade_id FROM market_data
          WHERE exchange = :exchange AND symbol = :symbol AND trade_id BETWEEN :lo AND :hi) AS d
) AS x
WHERE trade_id > prev + 1
ORDER BY from_id
LIMIT :limit
"""


def missing_id_ranges(engine: sa.Engine, exchange: str, symbol: str, lo: int, hi: int,
                      limit: int = LIST_LIMIT) -> list[tuple[int, int]]:
    """Holes between stored trade ids of ``symbol`` within ``lo..hi`` (inclusive ranges, ascending).

    Bounded by trade id rather than time, for the feed's start-up check of its newest ids (the
    natural key's (exchange, symbol, trade_id) prefix serves it).
    """
    params = {"exchange": exchange, "symbol": symbol, "lo": lo, "hi": hi, "limit": limit}
    with db_errors("missing_id_ranges"), engine.connect() as conn:
        return [(int(a), int(b)) for a, b in conn.execute(sa.text(_HOLES), params)]
