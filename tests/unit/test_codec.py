"""Protobuf codec: bytes written by hand (as old clients do) decode; round trips; garbage is a PayloadError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.legacy_wire import f_double, f_string, f_varint, varint
from ttquant_tasks.bus import codec
from ttquant_tasks.errors import PayloadError
from ttquant_tasks.models import Tick


def test_varint_helper_matches_the_spec_example() -> None:
    assert varint(150) == b"\x96\x01"  # the protobuf encoding guide's example


def test_hand_encoded_legacy_market_data_decodes() -> None:
    data = (f_string(1, "BTCUSDT") + f_double(2, 64321.1) + f_double(3, 0.5)
            + f_varint(4, 1732540000123000000) + f_varint(5, 1732540000125300000) + f_string(6, "binance"))
    msg = codec.decode_market_data(data)
    assert (msg.symbol, msg.last_price, msg.volume) == ("BTCUSDT", 64321.1, 0.5)
    assert (msg.exchange_time, msg.local_time, msg.exchange) == (1732540000123000000, 1732540000125300000, "binance")
    assert (msg.price_str, msg.volume_str, msg.trade_id) == ("", "", 0)  # new fields absent
    tick = codec.tick_from_market_data(msg)
    assert (tick.price, tick.qty) == ("64321.1", "0.5")


def test_our_market_data_is_readable_field_by_field_and_old_fields_unchanged() -> None:
    tick = Tick("binance", "ETHUSDT", 77, "3012.45", "0.00123", 1_700_000_000_000_000_000,
                1_700_000_000_000_500_000, True)
    expected = (f_string(1, "ETHUSDT") + f_double(2, 3012.45) + f_double(3, 0.00123)
                + f_varint(4, 1_700_000_000_000_000_000) + f_varint(5, 1_700_000_000_000_500_000)
                + f_string(6, "binance") + f_string(7, "3012.45") + f_string(8, "0.00123") + f_varint(9, 77))
    # protobuf serializes known fields in field-number order, so the bytes are exactly these
    assert codec.encode_market_data(tick) == expected
    back = codec.tick_from_market_data(codec.decode_market_data(expected))
    assert back == Tick("binance", "ETHUSDT", 77, "3012.45", "0.00123", tick.exchange_time, tick.local_time)


def test_hand_encoded_legacy_order_decodes_with_zero_values_omitted() -> None:
    data = (f_string(1, "o-1") + f_string(2, "momentum") + f_string(3, "BTCUSDT") + f_double(4, 64000.5)
            + f_varint(5, 3) + f_string(6, "BUY") + f_varint(7, 1732540000000000000))
    msg = codec.decode_order(data)
    assert (msg.order_id, msg.strategy_id, msg.symbol, msg.price) == ("o-1", "momentum", "BTCUSDT", 64000.5)
    assert (msg.volume, msg.side, msg.timestamp) == (3, "BUY", 1732540000000000000)
    assert codec.order_quantity(msg) == "3"
    # negative int32 the way old clients send it (10-byte varint)
    assert codec.decode_order(f_varint(5, -2)).volume == -2


def test_order_round_trip_keeps_exact_quantity_and_legacy_view() -> None:
    raw = codec.encode_order(order_id="o-2", strategy_id="s", symbol="BTCUSDT", price=64000.0,
                             quantity="0.001", side="SELL", timestamp=5)
    msg = codec.decode_order(raw)
    assert (msg.quantity, msg.volume, codec.order_quantity(msg), msg.side) == ("0.001", 0, "0.001", "SELL")
    whole = codec.decode_order(codec.encode_order(order_id="o", strategy_id="s", symbol="X", price=1.0,
                                                  quantity="2.000", side="BUY", timestamp=1))
    assert (whole.volume, whole.quantity) == (2, "2.000")
    with pytest.raises(ValueError, match="side"):
        codec.encode_order(order_id="o", strategy_id="s", symbol="X", price=1.0, quantity="1",
                           side="buy", timestamp=1)


def test_hand_encoded_legacy_trade_and_round_trip() -> None:
    data = (f_string(1, "t-1") + f_string(2, "o-1") + f_string(3, "s") + f_string(4, "BTCUSDT")
            + f_string(5, "BUY") + f_varint(8, 9) + f_string(9, "REJECTED") + f_varint(10, 1001)
            + f_string(11, "risk check failed") + f_varint(12, 1))
    msg = codec.decode_trade(data)
    assert (msg.status, msg.error_code, msg.error_message, msg.is_retryable) == (
        "REJECTED", 1001, "risk check failed", True)
    assert codec.trade_quantity(msg) == "0"
    raw = codec.encode_trade(trade_id="t-2", order_id="o-2", strategy_id="s", symbol="ETHUSDT", side="SELL",
                             filled_price="3012.45", filled_quantity="0.25", trade_time=7, status="FILLED",
                             commission=0.01)
    back = codec.decode_trade(raw)
    assert (back.filled_price_str, back.filled_price, back.filled_quantity, back.filled_volume) == (
        "3012.45", 3012.45, "0.25", 0)
    assert (back.trade_time, back.status, back.commission, codec.trade_quantity(back)) == (7, "FILLED", 0.01, "0.25")


def test_topics() -> None:
    assert codec.md_topic("BTCUSDT", "binance") == b"md.BTCUSDT.binance"
    assert codec.trade_topic("ETHUSDT", "okx") == b"trade.ETHUSDT.okx"
    with pytest.raises(ValueError, match="symbol"):
        codec.md_topic("", "binance")


@pytest.mark.parametrize("data", [b"\xff", b"\x0a\x05ab", b"\x12\x01", b"\x0a\x02\xff\xfe", b"\x08"])
def test_bytes_that_do_not_parse_raise_payload_error(data: bytes) -> None:
    for decode in (codec.decode_market_data, codec.decode_order, codec.decode_trade):
        with pytest.raises(PayloadError, match="not a valid ttquant"):
            decode(data)


@given(st.binary(max_size=200))
def test_random_bytes_raise_nothing_but_payload_error(data: bytes) -> None:
    for decode in (codec.decode_market_data, codec.decode_order, codec.decode_trade):
        with contextlib.suppress(PayloadError):
            decode(data)


ids = st.integers(min_value=0, max_value=2**63 - 1)
decimals = st.decimals(min_value=0, max_value=10**9, places=8, allow_nan=False).map(lambda d: f"{d:f}")


@given(st.from_regex(r"[A-Z0-9]{2,12}", fullmatch=True), ids, decimals, decimals, ids, ids, st.booleans())
def test_market_data_round_trip(symbol: str, tid: int, price: str, qty: str, et: int, lt: int, bm: bool) -> None:
    tick = Tick("binance", symbol, tid, price, qty, et, lt, bm)
    back = codec.tick_from_market_data(codec.decode_market_data(codec.encode_market_data(tick)))
    assert back == Tick("binance", symbol, tid, price, qty, et, lt)  # buyer_maker is not on the wire


_ONE_ENCODER = codec.MarketDataEncoder()  # one reused message across every example: nothing may carry over


@given(st.lists(st.tuples(st.sampled_from(["", "binance", "okx"]), st.from_regex(r"[A-Z0-9]{0,12}", fullmatch=True),
                          ids, decimals, decimals, ids, ids), min_size=1, max_size=5))
def test_reused_encoder_gives_the_fresh_message_bytes_tick_after_tick(
        rows: list[tuple[str, str, int, str, str, int, int]]) -> None:
    # Zeros and empty strings included: proto3 omits them, so a field set by the tick before must vanish.
    for exchange, symbol, tid, price, qty, et, lt in rows:
        tick = Tick(exchange, symbol, tid, price, qty, et, lt)
        assert _ONE_ENCODER(tick) == codec.encode_market_data(tick)


def test_reused_encoder_drops_what_the_previous_tick_had() -> None:
    enc = codec.MarketDataEncoder()
    enc(Tick("binance", "BTCUSDT", 9, "1.5", "2", 5, 6))
    empty = Tick("", "", 0, "0", "0", 0, 0)
    assert enc(empty) == codec.encode_market_data(empty) == f_string(7, "0") + f_string(8, "0")
