"""A paper venue: fills orders at once against the last market price, with slippage and fees.

Semantics (immediate-or-cancel, no order book):

* the execution price is the last price moved against the taker by ``slippage_bps``:
  BUY pays ``last * (1 + slip/10000)``, SELL receives ``last * (1 - slip/10000)``;
* a MARKET order (price 0) always fills at the execution price;
* a limit order fills at the execution price when its limit crosses it (BUY limit >= execution
  price, SELL limit <= execution price) -- the strategy gets the better price, as on a real
  venue; otherwise it is rejected with ``2002 not filled``, because a paper venue has no book to
  rest the order on and a resting order the gateway never reports again would be worse;
* no last price -> ``Rejection(1010, retryable=True)``;
* ``partial_fill_ratio`` r in (0, 1] splits the fill into ``ceil(1/r)`` fills of ``quantity * r``
  (the last takes the remainder), to exercise partial-fill handling downstream;
* commission per fill = ``price * quantity * commission_bps / 10000`` in the quote asset.

All arithmetic is exact ``Decimal``; nothing is rounded to a venue's tick or lot size.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import Decimal

from ..orders import Code, Fill, OrderRequest, Rejection

_BPS = Decimal(10_000)


def _new_id() -> str:
    return uuid.uuid4().hex


class PaperExchange:
    """Simulated immediate execution (see module doc).  ``clock`` returns ns since epoch, UTC."""

    def __init__(
        self,
        slippage_bps: Decimal = Decimal(0),
        commission_bps: Decimal = Decimal(0),
        partial_fill_ratio: Decimal | None = None,
        clock: Callable[[], int] = time.time_ns,
        id_factory: Callable[[], str] = _new_id,
    ) -> None:
        for name, value in (("slippage_bps", slippage_bps), ("commission_bps", commission_bps)):
            if not isinstance(value, Decimal | int) or not Decimal(value).is_finite() or value < 0:
                raise ValueError(f"{name} must be a finite Decimal >= 0, got {value!r}")
        if Decimal(slippage_bps) >= _BPS:
            raise ValueError(f"slippage_bps must be below 10000, got {slippage_bps}")
        if partial_fill_ratio is not None and not (0 < partial_fill_ratio <= 1):
            raise ValueError(f"partial_fill_ratio must be in (0, 1], got {partial_fill_ratio}")
        self.slippage_bps = Decimal(slippage_bps)
        self.commission_bps = Decimal(commission_bps)
        self.partial_fill_ratio = partial_fill_ratio
        self._clock = clock
        self._id_factory = id_factory

    def __repr__(self) -> str:
        return (
            f"PaperExchange(slippage_bps={self.slippage_bps}, commission_bps={self.commission_bps}, "
            f"partial_fill_ratio={self.partial_fill_ratio})"
        )

    def execution_price(self, side: str, last_price: Decimal) -> Decimal:
        """Last price moved against the taker by the slippage."""
        slip = self.slippage_bps / _BPS
        return last_price * (1 + slip) if side == "BUY" else last_price * (1 - slip)

    def _chunks(self, quantity: Decimal) -> list[Decimal]:
        if self.partial_fill_ratio is None or self.partial_fill_ratio == 1:
            return [quantity]
        step = quantity * self.partial_fill_ratio
        chunks: list[Decimal] = []
        left = quantity
        while left > 0:
            part = min(step, left)
            chunks.append(part)
            left -= part
        return chunks

    def submit(self, order: OrderRequest, last_price: Decimal | None) -> list[Fill] | Rejection:
        if last_price is None or last_price <= 0:
            return Rejection(Code.NO_MARKET_PRICE, f"no market price for {order.symbol}", retryable=True)
        price = self.execution_price(order.side, last_price)
        if not order.is_market:
            crosses = order.price >= price if order.side == "BUY" else order.price <= price
            if not crosses:
                return Rejection(
                    Code.NOT_FILLED,
                    f"{order.side} limit {order.price} does not cross the market ({price}); "
                    "paper orders are immediate-or-cancel",
                )
        now = self._clock()
        return [
            Fill(
                trade_id=self._id_factory(),
                order_id=order.order_id,
                strategy_id=order.strategy_id,
                symbol=order.symbol,
                side=order.side,
                price=price,
                quantity=qty,
                commission=price * qty * self.commission_bps / _BPS,
                time_ns=now,
            )
            for qty in self._chunks(order.quantity)
        ]
