"""The gateway's market-data intake: a burst costs one decode per topic, and the price stays right."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import zmq

from ttquant_tasks.bus.codec import encode_market_data, md_topic
from ttquant_tasks.gateway import runner
from ttquant_tasks.gateway.exchanges.paper import PaperExchange
from ttquant_tasks.gateway.risk import limits_from_mapping
from ttquant_tasks.gateway.runner import Gateway
from ttquant_tasks.models import Tick
from ttquant_tasks.settings import Settings


class Queued:
    """What ``Gateway._take_market_data`` needs of a SUB socket: ``recv_multipart(NOBLOCK)``."""

    def __init__(self, messages: list[list[bytes]]) -> None:
        self.messages = list(messages)

    def recv_multipart(self, flags: int = 0) -> list[bytes]:
        assert flags == zmq.NOBLOCK, "the loop must never block on market data"
        if not self.messages:
            raise zmq.Again()
        return self.messages.pop(0)


def md(symbol: str, price: str, exchange: str = "binance", trade_id: int = 1) -> list[bytes]:
    tick = Tick(exchange=exchange, symbol=symbol, trade_id=trade_id, price=price, qty="1",
                exchange_time=1, local_time=1)
    return [md_topic(symbol, exchange), encode_market_data(tick)]


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return Gateway(Settings(home=tmp_path), exchange=PaperExchange(), limits=limits_from_mapping({}),
                   publish=lambda record: None)


def test_a_burst_sets_the_newest_price_of_each_symbol_with_one_decode_per_topic(
        gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[bytes] = []
    real = runner.decode_market_data

    def counting(data: bytes) -> object:
        decoded.append(data)
        return real(data)

    monkeypatch.setattr(runner, "decode_market_data", counting)
    burst = [md("BTCUSDT", f"{100 + i}", trade_id=i) for i in range(200)]
    burst += [md("ETHUSDT", f"{10 + i}.5", trade_id=i) for i in range(100)]
    burst.append(md("BTCUSDT", "99.25", trade_id=999))
    gateway._take_market_data(Queued(burst))  # type: ignore[arg-type]
    assert gateway.service.last_prices == {"BTCUSDT": Decimal("99.25"), "ETHUSDT": Decimal("109.5")}
    assert len(decoded) == 2


def test_a_bad_newest_message_falls_back_to_the_one_before_and_is_counted(gateway: Gateway) -> None:
    topic = md_topic("ETHUSDT", "binance")
    burst = [md("ETHUSDT", "10"), md("ETHUSDT", "11"), [topic, b"\xff\xfe not protobuf"], [topic, b"\x0a"]]
    gateway._take_market_data(Queued(burst))  # type: ignore[arg-type]
    assert gateway.service.last_prices["ETHUSDT"] == Decimal("11")
    assert gateway.counts["md_bad"] == 2
    gateway._take_market_data(Queued([[topic, b"\xff"]]))  # type: ignore[arg-type]
    assert gateway.service.last_prices["ETHUSDT"] == Decimal("11"), "a bad message alone changes nothing"
    assert gateway.counts["md_bad"] == 3


def test_one_turn_reads_at_most_a_batch_so_orders_are_looked_at_in_between(gateway: Gateway) -> None:
    sock = Queued([md("BTCUSDT", str(100 + i), trade_id=i) for i in range(runner._MD_BATCH + 7)])
    gateway._take_market_data(sock)  # type: ignore[arg-type]
    assert len(sock.messages) == 7
    assert gateway.service.last_prices["BTCUSDT"] == Decimal(100 + runner._MD_BATCH - 1)
