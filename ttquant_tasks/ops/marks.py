"""Mark-to-market: a new ``positions`` snapshot per open position, unrealized PnL at the latest price.

For every open position in ``latest_positions`` (quantity != 0) the newest ``market_data`` price of
its symbol on ``exchange`` is the mark (``positions`` has no exchange column: one gateway trades
on one exchange).  A snapshot is written at ``now`` (UTC, the database's clock) with the position,
average price and realized PnL carried over and ``unrealized_pnl = (mark - avg_price) * position``
(quote asset, exact NUMERIC arithmetic in Python ``Decimal``).

Idempotent: a position whose unrealized PnL at the current mark equals its latest snapshot's gets
no new row, so re-running with unchanged prices writes nothing; rows are inserted with
``ON CONFLICT (strategy_id, symbol, time) DO NOTHING``.  Symbols without any tick are skipped.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ..gateway.positions import Position, unrealized_pnl
from ..storage.engine import db_errors

# One index probe per symbol (market_data (symbol, time DESC)), not a scan of the table.
_OPEN = sa.text("""
SELECT lp.strategy_id, lp.symbol, lp.position, lp.avg_price, lp.unrealized_pnl, lp.realized_pnl, px.last_price
FROM latest_positions lp
CROSS JOIN LATERAL (
    SELECT md.last_price FROM market_data md
    WHERE md.symbol = lp.symbol AND md.exchange = :exchange
    ORDER BY md.time DESC, md.trade_id DESC LIMIT 1
) px
WHERE lp.position <> 0
ORDER BY lp.strategy_id, lp.symbol
""")

_INSERT = sa.text("""
INSERT INTO positions (time, strategy_id, symbol, position, avg_price, unrealized_pnl, realized_pnl)
VALUES (now(), :strategy_id, :symbol, :position, :avg_price, :unrealized_pnl, :realized_pnl)
ON CONFLICT (strategy_id, symbol, time) DO NOTHING
""")


def snapshot(row: Any) -> dict[str, Any] | None:
    """The new snapshot for one ``_OPEN`` row, or None when its unrealized PnL did not change.  Pure."""
    pos = Position(str(row.strategy_id), str(row.symbol), Decimal(row.position), Decimal(row.avg_price or 0),
                   Decimal(row.realized_pnl or 0))
    pnl = unrealized_pnl(pos, Decimal(row.last_price))
    if row.unrealized_pnl is not None and Decimal(row.unrealized_pnl) == pnl:
        return None
    return {"strategy_id": pos.strategy_id, "symbol": pos.symbol, "position": pos.quantity,
            "avg_price": pos.avg_price, "unrealized_pnl": pnl, "realized_pnl": row.realized_pnl}


def mark_to_market(engine: sa.Engine, exchange: str) -> dict[str, int]:
    """Write snapshots of the open positions whose unrealized PnL moved; ``{"open", "written"}``.

    One transaction.  Raises :class:`~ttquant_tasks.errors.DatabaseUnavailable` when the database
    cannot be reached.
    """
    with db_errors("mark_to_market"), engine.begin() as conn:
        rows = list(conn.execute(_OPEN, {"exchange": exchange}))
        new = [s for s in (snapshot(r) for r in rows) if s is not None]
        written = sum(int(conn.execute(_INSERT, s).rowcount) for s in new)
    return {"open": len(rows), "written": written}
