"""The gateway's own record of its positions, beside the database's.

The database is behind the gateway by design: records travel through the broker (or the spool)
and a worker. A gateway restarted while its last records are still queued would restore stale
positions from ``latest_positions`` and trade on from them. So the gateway also saves its
positions to ``$TTQUANT_HOME/gateway-positions.json`` (atomically; every second while fills
happen, and at stop), and on start takes, per (strategy, symbol), the saved position unless the
database holds a snapshot newer than the save. A SIGKILL loses at most the last second of saves.
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


def save(path: Path, positions: Iterable[Position], saved_ns: int) -> None:
    """Atomically record ``positions`` as of ``saved_ns`` (exact decimal strings); errors are logged."""
    data = {"saved_ns": saved_ns, "positions": [
        {"strategy_id": p.strategy_id, "symbol": p.symbol, "quantity": str(p.quantity),
         "avg_price": str(p.avg_price), "realized_pnl": str(p.realized_pnl), "fees": str(p.fees)}
        for p in positions]}
    try:
        write_stats(path, data)
    except OSError as exc:
        log.warning("gateway: cannot save positions to %s: %s", path, exc)


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
