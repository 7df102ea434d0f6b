"""The gateway's order handling, apart from its sockets: bytes in, trade frames and records out.

:class:`OrderService` keeps the state one gateway owns -- last market price per symbol, positions
per (strategy, symbol), the rate-limit window -- and turns one ``Order`` message into:

* the ``Trade`` frames to publish on ZMQ (``[topic, body]``; one per fill, or one REJECTED);
* records handed to ``submit`` (the enqueuer's non-blocking ``submit``): the order row on receipt
  (NEW), a trade row per fill or rejection, a position snapshot after each fill, then the order
  row with its final status.

It never touches the broker, the database or a socket; the exchange adapter is the only I/O on
the order path (a paper venue does none).  Not thread-safe: one thread calls it.

``gate`` (optional) is asked after the order's NEW record was submitted and before any risk
check: a ``Rejection`` it returns answers the order without executing it (the gateway refuses
orders while its write-ahead journal cannot take their records, code 1011).

Malformed input never raises: bytes that do not parse, and orders with missing or absurd fields,
are answered with a REJECTED trade (code 1009) when an order id can be read, and are counted
(``counts["malformed"]``) and logged otherwise.

Position snapshot times are the fill time, bumped by 1 us when needed so that snapshots of one
(strategy, symbol) get strictly increasing times: the ``positions`` key is (strategy, symbol,
time) at microsecond resolution, and two partial fills of one order share a time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from ..bus.codec import decode_order, encode_trade, trade_topic
from ..errors import PayloadError
from .exchanges import Exchange
from .orders import Code, Fill, OrderRequest, Rejection, order_from_fields
from .positions import Position, apply_fill
from .records import fill_record, order_record, order_status, position_record, rejection_record
from .risk import RateState, RiskLimits, check_all

log = logging.getLogger(__name__)

Frame = tuple[bytes, bytes]
_US = 1000  # ns
_UNKNOWN_SYMBOL = "UNKNOWN"


def salvage_order_id(data: bytes) -> str | None:
    """The order id of bytes that do not parse as a whole, when it is their first field.

    Existing clients write fields in number order, so field 1 (``order_id``, tag ``0x0a``) comes
    first.  Returns None unless it is there, complete, UTF-8 and printable.
    """
    if len(data) < 2 or data[0] != 0x0A:
        return None
    length, shift, i = 0, 0, 1
    while i < len(data) and i < 6:
        b = data[i]
        length |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    else:
        return None
    if not 0 < length <= 64 or i + length > len(data):
        return None
    try:
        text = data[i:i + length].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and text.strip() == text else None


def _topic_symbol(symbol: str) -> str:
    ok = symbol and "." not in symbol and symbol.isprintable() and len(symbol) <= 32
    return symbol if ok else _UNKNOWN_SYMBOL


class OrderService:
    """Order handling state and logic (see module doc).

    ``exchange_name`` names the venue in trade topics.  ``clock`` returns ns since epoch, UTC (risk
    ages, rate window, record times).  ``positions`` restores state (e.g. from ``load_positions``).
    """

    def __init__(self, *, exchange: Exchange, limits: RiskLimits, submit: Callable[[dict[str, Any]], None],
                 exchange_name: str, positions: Iterable[Position] = (),
                 clock: Callable[[], int] = time.time_ns,
                 id_factory: Callable[[], str] = lambda: uuid.uuid4().hex,
                 gate: Callable[[], Rejection | None] | None = None) -> None:
        self.exchange = exchange
        self._gate = gate
        self.limits = limits
        self.exchange_name = exchange_name
        self._submit = submit
        self._clock = clock
        self._new_id = id_factory
        self.positions: dict[tuple[str, str], Position] = {(p.strategy_id, p.symbol): p for p in positions}
        self.last_prices: dict[str, Decimal] = {}
        self._rate = RateState()
        self._snapshot_ns: dict[tuple[str, str], int] = {}
        self.counts = {"orders": 0, "filled": 0, "partially_filled": 0, "rejected": 0, "fills": 0,
                       "malformed": 0, "unanswerable": 0, "prices": 0}

    # ---- market data -------------------------------------------------------------------------
    def on_price(self, symbol: str, price: Decimal) -> None:
        """Remember the last market price of ``symbol`` (quote asset); non-positive prices ignored."""
        if price.is_finite() and price > 0:
            self.last_prices[symbol] = price
            self.counts["prices"] += 1

    def position(self, strategy_id: str, symbol: str) -> Position:
        return self.positions.get((strategy_id, symbol)) or Position(strategy_id, symbol)

    # ---- orders ------------------------------------------------------------------------------
    def handle(self, data: bytes) -> list[Frame]:
        """Process one ``Order`` message; returns the ``Trade`` frames to publish."""
        self.counts["orders"] += 1
        now = self._clock()
        try:
            msg = decode_order(data)
        except PayloadError as exc:
            self.counts["malformed"] += 1
            order_id = salvage_order_id(data)
            log.warning("gateway: malformed order (%d bytes, order id %r): %s", len(data), order_id, exc)
            if order_id is None:
                self.counts["unanswerable"] += 1
                return []
            return [self._reject_raw(order_id, "", "", "", Rejection(Code.INVALID_ORDER, str(exc)), now)]
        parsed = order_from_fields(order_id=msg.order_id, strategy_id=msg.strategy_id, symbol=msg.symbol,
                                   side=msg.side, price=msg.price, volume=msg.volume, timestamp=msg.timestamp,
                                   quantity=msg.quantity or None)
        if isinstance(parsed, Rejection):
            self.counts["malformed"] += 1
            log.warning("gateway: invalid order %r from strategy %r: %s", msg.order_id, msg.strategy_id,
                        parsed.reason)
            if not msg.order_id:
                self.counts["unanswerable"] += 1
                return []
            return [self._reject_raw(msg.order_id, msg.strategy_id, msg.symbol, msg.side, parsed, now)]
        return self._execute(parsed, now)

    def _execute(self, order: OrderRequest, now: int) -> list[Frame]:
        self._submit(order_record(order, "NEW", now, now))
        key = (order.strategy_id, order.symbol)
        last = self.last_prices.get(order.symbol)
        rejection = self._gate() if self._gate is not None else None
        if rejection is None:
            rejection, self._rate = check_all(order, self.limits, now_ns=now, last_price=last,
                                              position=self.position(*key).quantity, rate=self._rate)
        outcome: list[Fill] | Rejection = rejection if rejection is not None else self.exchange.submit(order, last)
        status = order_status(order, outcome)
        if isinstance(outcome, Rejection) or not outcome:
            why = outcome if isinstance(outcome, Rejection) else Rejection(Code.NOT_FILLED, "no fills")
            frames = [self._reject_raw(order.order_id, order.strategy_id, order.symbol, order.side, why, now)]
        else:
            frames = [self._fill(fill, last) for fill in outcome]
        self.counts[status.lower()] += 1
        self._submit(order_record(order, status, now, self._clock()))
        return frames

    def _fill(self, fill: Fill, last: Decimal | None) -> Frame:
        key = (fill.strategy_id, fill.symbol)
        before = self.position(*key)
        after = apply_fill(before, fill)
        self.positions[key] = after
        self.counts["fills"] += 1
        frame = (trade_topic(fill.symbol, self.exchange_name),
                 encode_trade(trade_id=fill.trade_id, order_id=fill.order_id, strategy_id=fill.strategy_id,
                              symbol=fill.symbol, side=fill.side, filled_price=format(fill.price, "f"),
                              filled_quantity=format(fill.quantity, "f"), trade_time=fill.time_ns,
                              status="FILLED", commission=float(fill.commission)))
        self._submit(fill_record(fill, after.realized_pnl - before.realized_pnl))
        snap_ns = max(fill.time_ns, self._snapshot_ns.get(key, 0) + _US)
        self._snapshot_ns[key] = snap_ns
        self._submit(position_record(after, last if last is not None else fill.price, snap_ns))
        return frame

    def _reject_raw(self, order_id: str, strategy_id: str, symbol: str, side: str, rejection: Rejection,
                    now: int) -> Frame:
        """A REJECTED trade frame and its trade record, for fields as they came (maybe invalid)."""
        trade_id = self._new_id()
        self._submit(rejection_record(trade_id=trade_id, order_id=order_id, strategy_id=strategy_id,
                                      symbol=symbol, side=side, rejection=rejection, time_ns=now))
        body = encode_trade(trade_id=trade_id, order_id=order_id, strategy_id=strategy_id, symbol=symbol,
                            side=side, filled_price="0", filled_quantity="0", trade_time=now, status="REJECTED",
                            error_code=int(rejection.code), error_message=rejection.reason,
                            is_retryable=rejection.retryable)
        return trade_topic(_topic_symbol(symbol), self.exchange_name), body
