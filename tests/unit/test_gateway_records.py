"""Gateway records (pure) and the order service without sockets: what a strategy gets and what gets stored."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tests.support.legacy_wire import legacy_order
from ttquant_tasks.bus.codec import decode_trade, encode_order, trade_quantity
from ttquant_tasks.errors import PayloadError
from ttquant_tasks.gateway.exchanges.paper import PaperExchange
from ttquant_tasks.gateway.orders import Code, Fill, OrderRequest, Rejection
from ttquant_tasks.gateway.positions import Position
from ttquant_tasks.gateway.records import (
    fill_record,
    group_members,
    group_record,
    order_record,
    order_status,
    parse_record,
    position_record,
    rejection_record,
)
from ttquant_tasks.gateway.risk import RiskLimits, limits_from_mapping
from ttquant_tasks.gateway.service import OrderService, salvage_order_id
from ttquant_tasks.storage.receipts import record_key
from ttquant_tasks.tasks.publisher import describe

T0 = 1_718_000_000_000_000_000
ORDER = OrderRequest("o-1", "s1", "BTCUSDT", "BUY", Decimal("0"), Decimal("0.5"), T0)


def fill(qty: str, price: str = "100", trade_id: str = "t1", side: str = "BUY", commission: str = "0") -> Fill:
    return Fill(trade_id, "o-1", "s1", "BTCUSDT", "BUY" if side == "BUY" else "SELL", Decimal(price),
                Decimal(qty), Decimal(commission), T0)


# ---------------------------------------------------------------- records


@pytest.mark.parametrize(("outcome", "status"), [
    ([fill("0.5")], "FILLED"),
    ([fill("0.2"), fill("0.3", trade_id="t2")], "FILLED"),
    ([fill("0.2")], "PARTIALLY_FILLED"),
    ([], "REJECTED"),
    (Rejection(1002, "too big"), "REJECTED"),
])
def test_order_status(outcome: Any, status: str) -> None:
    assert order_status(ORDER, outcome) == status


def test_records_are_json_and_parse_back_exactly() -> None:
    records = [
        order_record(ORDER, "NEW", T0 + 1, T0 + 1),
        fill_record(fill("0.5", "64321.12345678", commission="0.0321"), Decimal("-0.0321")),
        rejection_record(trade_id="r1", order_id="o-2", strategy_id="s1", symbol="BTCUSDT", side="SELL",
                         rejection=Rejection(1006, "rate", retryable=True), time_ns=T0),
        position_record(Position("s1", "BTCUSDT", Decimal("0.5"), Decimal("100"), Decimal("-1")),
                        Decimal("110"), T0),
    ]
    for rec in records:
        back = json.loads(json.dumps(rec))
        assert back == rec
        parse_record(back, rec["kind"])
    order = parse_record(records[0], "order")
    assert order["volume"] == Decimal("0.5") and order["status"] == "NEW" and order["time_ns"] == T0 + 1
    trade = parse_record(records[1], "trade")
    assert trade["filled_price"] == Decimal("64321.12345678") and trade["realized_pnl"] == Decimal("-0.0321")
    rej = parse_record(records[2], "trade")
    assert (rej["error_code"], rej["is_retryable"], rej["filled_price"]) == (1006, True, None)
    pos = parse_record(records[3], "position")
    assert pos["unrealized_pnl"] == Decimal("5.0") and pos["avg_price"] == Decimal("100")
    assert records[0]["chunk_id"] == "order:o-1:NEW" and records[1]["chunk_id"] == "trade:t1"


def test_a_group_carries_its_records_and_their_probe_keys() -> None:
    new, filled = order_record(ORDER, "NEW", T0, T0), order_record(ORDER, "FILLED", T0, T0 + 5)
    trade = fill_record(fill("0.5"), Decimal(0))
    group = group_record([new, trade, filled])
    assert json.loads(json.dumps(group)) == group
    assert group["chunk_id"] == "group:order:o-1:NEW+3"  # the same records grouped again: the same id
    assert group_members(group) == [new, trade, filled]
    assert record_key(group) == (*record_key(new), *record_key(trade), *record_key(filled))
    assert describe(group) == "[<3 records group:order:o-1:NEW+3>]"
    assert describe(new) == "[<order order:o-1:NEW>]"
    with pytest.raises(ValueError, match="at least one"):
        group_record([])
    for bad, message in (([new], "kind 'group'"), ({**group, "version": 9}, "version 9"),
                         ({**group, "records": {}}, "non-empty list")):
        with pytest.raises(PayloadError, match=message):
            group_members(bad)


def test_rejection_record_cleans_nul_characters() -> None:
    rec = rejection_record(trade_id="r", order_id="a\x00b", strategy_id="", symbol="x", side="?",
                           rejection=Rejection(1009, "bad\x00"), time_ns=T0)
    assert rec["order_id"] == "a\ufffdb" and rec["error_message"] == "bad\ufffd"


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "trade"}, "field 'kind'"),
    ({"version": 2}, "unsupported version"),
    ({"volume": 0.5}, "'volume': expected a decimal string"),
    ({"price": "abc"}, "'price': 'abc' is not a decimal"),
    ({"price": "NaN"}, "not finite"),
    ({"timestamp": "1"}, "'timestamp': expected an integer"),
    ({"timestamp": -5}, "positive int64"),
    ({"order_id": None}, "'order_id' is missing"),
    ({"status": "DONE"}, "'status': 'DONE'"),
])
def test_parse_record_names_the_bad_field(change: dict[str, Any], message: str) -> None:
    rec = {**order_record(ORDER, "NEW", T0, T0), **change}
    with pytest.raises(PayloadError, match=message):
        parse_record(rec, "order")


def test_parse_record_refuses_non_objects() -> None:
    with pytest.raises(PayloadError, match="expected a JSON object"):
        parse_record(["order"], "order")


# ---------------------------------------------------------------- salvaging an order id


def test_salvage_order_id() -> None:
    assert salvage_order_id(b"\x0a\x03abc\xff\xff") == "abc"
    assert salvage_order_id(b"\x0a\x05abc") is None  # truncated
    assert salvage_order_id(b"\x12\x03abc") is None  # not field 1
    assert salvage_order_id(b"\x0a\x02\xff\xfe") is None  # not UTF-8
    assert salvage_order_id(b"\x0a\x02a\n") is None  # control character
    assert salvage_order_id(b"") is None


# ---------------------------------------------------------------- the service


class Sink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, rec: dict[str, Any]) -> None:
        self.records.append(json.loads(json.dumps(rec)))  # what the broker would carry

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == kind]


def service(limits: RiskLimits | None = None, **paper: Any) -> tuple[OrderService, Sink]:
    sink = Sink()
    ids = iter(f"id{i}" for i in range(1000))
    svc = OrderService(exchange=PaperExchange(clock=lambda: T0, id_factory=lambda: next(ids), **paper),
                       limits=limits or limits_from_mapping({"positions": {"default_max": "100"}}),
                       submit=sink, exchange_name="paper", clock=lambda: T0, id_factory=lambda: next(ids))
    return svc, sink


def order(order_id: str, side: str = "BUY", quantity: str = "1", price: float = 0.0, ts: int = T0) -> bytes:
    return encode_order(order_id=order_id, strategy_id="s1", symbol="BTCUSDT", price=price, quantity=quantity,
                        side=side, timestamp=ts)


def test_fills_publish_trades_and_record_order_trade_position() -> None:
    svc, sink = service(commission_bps=Decimal(10))
    svc.on_price("BTCUSDT", Decimal("100"))
    frames = svc.handle(legacy_order("o-1", "s1", "BTCUSDT", 2, "BUY", T0))
    svc.on_price("BTCUSDT", Decimal("110"))
    frames += svc.handle(order("o-2", "SELL", "0.5"))
    assert [f[0] for f in frames] == [b"trade.BTCUSDT.paper"] * 2
    t1, t2 = (decode_trade(f[1]) for f in frames)
    assert (t1.status, trade_quantity(t1), t1.filled_price_str) == ("FILLED", "2", "100")
    assert (t2.order_id, trade_quantity(t2), t2.filled_price_str) == ("o-2", "0.5", "110")
    assert [(r["order_id"], r["status"]) for r in sink.kinds("order")] == [
        ("o-1", "NEW"), ("o-1", "FILLED"), ("o-2", "NEW"), ("o-2", "FILLED")]
    trades = sink.kinds("trade")
    # buy 2 @ 100, fee 0.2; sell 0.5 @ 110, fee 0.055, realizes 5 - 0.055
    assert [Decimal(t["realized_pnl"]) for t in trades] == [Decimal("-0.2"), Decimal("4.945")]
    last = sink.kinds("position")[-1]
    assert (Decimal(last["position"]), Decimal(last["avg_price"])) == (Decimal("1.5"), Decimal("100"))
    assert Decimal(last["realized_pnl"]) == Decimal("4.745")
    assert Decimal(last["unrealized_pnl"]) == Decimal("15")  # (110 - 100) * 1.5


def test_partial_fills_get_distinct_snapshot_times() -> None:
    svc, sink = service(partial_fill_ratio=Decimal("0.25"))
    svc.on_price("BTCUSDT", Decimal("100"))
    assert len(svc.handle(order("o-1"))) == 4
    times = [r["time_ns"] for r in sink.kinds("position")]
    assert times == [T0, T0 + 1000, T0 + 2000, T0 + 3000]
    assert sink.kinds("order")[-1]["status"] == "FILLED"


@pytest.mark.parametrize(("limits", "data", "code"), [
    ({"orders": {"max_quantity": "1"}}, order("o", quantity="2"), Code.ORDER_SIZE),
    ({"orders": {"max_age_ms": 10}}, order("o", ts=T0 - 11_000_000), Code.STALE_ORDER),
    ({"prices": {"band_bps": 100}}, order("o", price=102.0), Code.PRICE_OUTSIDE_BAND),
    ({"positions": {"max": {"BTCUSDT": "0.5"}}}, order("o"), Code.POSITION_LIMIT),
    ({}, order("o", price=90.0), Code.NOT_FILLED),
])
def test_rejections_answer_with_their_code(limits: dict[str, Any], data: bytes, code: int) -> None:
    base: dict[str, Any] = {"positions": {"default_max": "100"}}
    svc, sink = service(limits_from_mapping({**base, **limits}))
    svc.on_price("BTCUSDT", Decimal("100"))
    (frame,) = svc.handle(data)
    trade = decode_trade(frame[1])
    assert (trade.status, trade.error_code, trade.order_id) == ("REJECTED", code, "o")
    assert [r["status"] for r in sink.kinds("order")] == ["NEW", "REJECTED"]
    assert sink.kinds("trade")[0]["error_code"] == code and not sink.kinds("position")
    assert svc.positions == {}


def test_malformed_bytes_and_fields() -> None:
    svc, sink = service()
    assert svc.handle(b"\xff\xff\xff") == []
    (frame,) = svc.handle(b"\x0a\x04ab-1\xff\xff")
    salvaged = decode_trade(frame[1])
    assert (salvaged.order_id, salvaged.error_code, frame[0]) == ("ab-1", 1009, b"trade.UNKNOWN.paper")
    (frame,) = svc.handle(order("o-3", side="BUY", quantity="-1"))
    assert "quantity '-1' must be > 0" in decode_trade(frame[1]).error_message
    assert svc.counts["malformed"] == 3 and svc.counts["unanswerable"] == 1
    assert not sink.kinds("order")  # invalid orders have no order row, only their REJECTED trade
    assert [r["order_id"] for r in sink.kinds("trade")] == ["ab-1", "o-3"]
