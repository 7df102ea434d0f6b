"""The gateway's own record of its positions, beside the database's.

The database is behind the gateway by design: records travel through the broker (or the spool)
and a worker. A gateway restarted while its last records are still queued would restore stale
positions from ``latest_positions`` and trade on from them. So the gateway also saves its
positions to ``$TTQUANT_HOME/gateway-positions.json`` (atomically; every second while fills
happen, and at stop), and on start takes, per (strategy, symbol), the saved position unless the
database holds a snapshot newer than the save. A SIGKILL loses at most the last second of saves;
the write-ahead journal (:mod:`.journal`) has the snapshots since, and :func:`from_journal` lays
them over: the save records the journal seq it includes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..feed.stats import read_stats, write_stats
from .positions import Position

log = logging.getLogger(__name__)

Key = tuple[str, str]


def state_path(home: Path) -> Path:
    return home / "gateway-positions.json"


def save(path: Path, positions: Iterable[Position], saved_ns: int, journal_seq: int | None = None) -> bool:
    """Atomically record ``positions`` as of ``saved_ns`` (exact decimal strings) and of the journal's
    entry ``journal_seq`` (see :mod:`.journal`); False (and logged) when it could not be written."""
    data: dict[str, Any] = {"saved_ns": saved_ns, "journal_seq": journal_seq, "positions": [
        {"strategy_id": p.strategy_id, "symbol": p.symbol, "quantity": str(p.quantity),
         "avg_price": str(p.avg_price), "realized_pnl": str(p.realized_pnl), "fees": str(p.fees)}
        for p in positions]}
    try:
        write_stats(path, data)
    except OSError as exc:
        log.warning("gateway: cannot save positions to %s: %s", path, exc)
        return False
    return True


def saved_journal_seq(path: Path) -> int | None:
    """The journal seq the saved positions include (None: no record, or saved without a journal)."""
    data = read_stats(path)
    value = data.get("journal_seq") if data else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def from_journal(positions: list[Position], journal: Mapping[Key, tuple[int, Mapping[str, Any]]],
                 saved_seq: int | None) -> list[Position]:
    """``positions`` overlaid, per key, with the journal's newest snapshot when it is newer than the
    saved record (its seq above ``saved_seq``; any, when None).  Every fill's snapshot is journaled
    before its trade is published, so such a snapshot is the newest state there is."""
    out: dict[Key, Position] = {(p.strategy_id, p.symbol): p for p in positions}
    for key, (seq, rec) in journal.items():
        if saved_seq is not None and seq <= saved_seq:
            continue
        try:
            out[key] = Position(strategy_id=key[0], symbol=key[1], quantity=Decimal(rec["position"]),
                                avg_price=Decimal(rec.get("avg_price") or 0),
                                realized_pnl=Decimal(rec.get("realized_pnl") or 0),
                                fees=Decimal(rec.get("fees") or 0))
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            log.error("gateway: ignoring unreadable journaled position %s/%s: %s", key[0], key[1], exc)
    return list(out.values())


def load(path: Path) -> tuple[int, dict[Key, Position]] | None:
    """``(saved_ns, positions)`` from ``path``; None when there is no readable record."""
    data = read_stats(path)
    if not data:
        return None
    try:
        saved_ns = int(data["saved_ns"])
        positions = {}
        for p in data["positions"]:
            pos = Position(strategy_id=str(p["strategy_id"]), symbol=str(p["symbol"]),
                           quantity=Decimal(p["quantity"]), avg_price=Decimal(p["avg_price"]),
                           realized_pnl=Decimal(p["realized_pnl"]), fees=Decimal(p["fees"]))
            positions[(pos.strategy_id, pos.symbol)] = pos
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        log.error("gateway: ignoring unreadable position record %s: %s", path, exc)
        return None
    return saved_ns, positions


def merge(db: Iterable[Position], db_times: Mapping[Key, int],
          saved: tuple[int, Mapping[Key, Position]] | None) -> list[Position]:
    """Per key, the saved position unless the database has a snapshot newer than the save."""
    out: dict[Key, Position] = {(p.strategy_id, p.symbol): p for p in db}
    if saved is not None:
        saved_ns, positions = saved
        for key, pos in positions.items():
            if db_times.get(key, 0) <= saved_ns:
                out[key] = pos
    return list(out.values())


def describe(positions: Iterable[Position]) -> dict[str, Any]:
    return {f"{p.strategy_id}/{p.symbol}": str(p.quantity) for p in positions}
