"""Position accounting with average cost: pure functions over immutable ``Position`` values.

Sign convention: ``quantity`` > 0 long, < 0 short (base asset).  Prices and PnL in the quote
asset.  Fill commissions are taken to be in the quote asset (the adapters convert).

Rules of ``apply_fill`` (``q`` the fill's signed quantity, ``p`` its price):

* opening or adding (position flat or same sign as ``q``): the average cost becomes the
  quantity-weighted mean of the old average and ``p``;
* reducing (opposite sign, ``|q| <= |position|``): realizes ``(p - avg) * closed`` for a long,
  ``(avg - p) * closed`` for a short; the average cost of what is left is unchanged;
* flipping (opposite sign, ``|q| > |position|``): realizes the closed part as above and opens the
  remainder at ``p``;
* commission always reduces ``realized_pnl`` and adds to ``fees``.

All arithmetic is ``Decimal``.  Only the new average cost divides, so it is exact whenever the
quotient terminates within the context precision (28 significant digits by default) and rounded
to it otherwise; everything else is exact.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from .orders import Fill

_ZERO = Decimal(0)


@dataclasses.dataclass(frozen=True, slots=True)
class Position:
    """A strategy's holding in one symbol.  ``avg_price`` is 0 when flat."""

    strategy_id: str
    symbol: str
    quantity: Decimal = _ZERO
    avg_price: Decimal = _ZERO
    realized_pnl: Decimal = _ZERO
    fees: Decimal = _ZERO


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


def apply_fill(pos: Position, fill: Fill) -> Position:
    """The position after ``fill`` (same strategy and symbol; ``ValueError`` otherwise)."""
    if (fill.strategy_id, fill.symbol) != (pos.strategy_id, pos.symbol):
        raise ValueError(
            f"fill {fill.trade_id} is for {fill.strategy_id}/{fill.symbol}, position is {pos.strategy_id}/{pos.symbol}"
        )
    if fill.quantity <= 0:
        raise ValueError(f"fill {fill.trade_id} has quantity {fill.quantity}; must be > 0")
    q = fill.quantity if fill.side == "BUY" else -fill.quantity
    p = fill.price
    old = pos.quantity
    realized = pos.realized_pnl - fill.commission
    fees = pos.fees + fill.commission
    if old == 0 or _sign(old) == _sign(q):
        new = old + q
        avg = (abs(old) * pos.avg_price + abs(q) * p) / abs(new)
        return dataclasses.replace(pos, quantity=new, avg_price=avg, realized_pnl=realized, fees=fees)
    closed = min(abs(q), abs(old))
    realized += (p - pos.avg_price) * closed * _sign(old)
    new = old + q
    if new == 0:
        avg = _ZERO
    elif _sign(new) == _sign(old):
        avg = pos.avg_price
    else:  # flipped through zero: the remainder opens at the fill price
        avg = p
    return dataclasses.replace(pos, quantity=new, avg_price=avg, realized_pnl=realized, fees=fees)


def unrealized_pnl(pos: Position, mark: Decimal) -> Decimal:
    """Mark-to-market PnL of the open quantity at ``mark``: ``(mark - avg) * quantity`` (quote asset)."""
    return (mark - pos.avg_price) * pos.quantity
