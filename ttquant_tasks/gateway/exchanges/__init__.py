"""Where orders execute: one module per venue, all speaking the ``Exchange`` protocol."""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from ..orders import Fill, OrderRequest, Rejection


class Exchange(Protocol):
    """Submit one risk-checked order and report what happened.

    ``last_price`` is the latest market price the gateway saw for the symbol (quote asset), or
    None.  Returns the fills (an order may fill in several parts) or a ``Rejection``; an
    adapter never raises for venue or network failures: it maps them to ``Rejection(20xx)`` with
    ``retryable`` set when resubmitting may help.  Submitting is not idempotent on every venue:
    ``order_id`` is sent as the client order id so a venue can recognise a resubmission.
    """

    def submit(self, order: OrderRequest, last_price: Decimal | None) -> list[Fill] | Rejection: ...
