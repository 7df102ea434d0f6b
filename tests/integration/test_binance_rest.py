"""The Binance spot adapter against a loopback fake that verifies signatures (no internet)."""

from __future__ import annotations

import logging
import socket
import urllib.parse
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.support.fake_binance_rest import API_KEY, API_SECRET, FakeBinance, running_fake_binance
from ttquant_tasks.gateway.exchanges.binance import BinanceSpotExchange, fills_from_response, map_error, sign
from ttquant_tasks.gateway.orders import Code, Fill, OrderRequest, Rejection

pytestmark = pytest.mark.integration

NOW_MS = 1_732_540_000_123


def _order(price: str = "64000.10", quantity: str = "0.00150000", order_id: str = "o-1") -> OrderRequest:
    return OrderRequest(order_id, "s1", "BTCUSDT", "BUY", Decimal(price), Decimal(quantity), NOW_MS * 1_000_000)


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with running_fake_binance() as fake:
        yield fake


def _exchange(fake: FakeBinance, **kw: object) -> BinanceSpotExchange:
    args: dict[str, object] = {"base_url": fake.base_url, "clock_ms": lambda: NOW_MS, "timeout": 5.0}
    args.update(kw)
    return BinanceSpotExchange(API_KEY, API_SECRET, **args)  # type: ignore[arg-type]


def test_signature_matches_the_binance_docs_example() -> None:
    # The SIGNED endpoint example of Binance's spot REST API documentation.
    query = (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    )
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    assert sign(query, secret) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_limit_order_fills_with_exact_decimals(fake: FakeBinance) -> None:
    result = _exchange(fake).submit(_order(), None)
    assert isinstance(result, list)
    assert [(f.price, f.quantity, f.commission) for f in result] == [
        (Decimal("64000.10000000"), Decimal("0.00090000"), Decimal("0.05760009")),
        (Decimal("64000.10000000"), Decimal("0.00060000"), Decimal("0.03840006")),
    ]
    assert sum((f.quantity for f in result), Decimal(0)) == Decimal("0.0015")
    first = result[0]
    assert first == Fill(
        trade_id="BTCUSDT:56",
        order_id="o-1",
        strategy_id="s1",
        symbol="BTCUSDT",
        side="BUY",
        price=Decimal("64000.10000000"),
        quantity=Decimal("0.00090000"),
        commission=Decimal("0.05760009"),
        time_ns=1507725176595 * 1_000_000,
        commission_asset="USDT",
    )
    (req,) = fake.requests
    assert req["headers"]["x-mbx-apikey"] == API_KEY
    assert req["form"] == {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "IOC",
        "price": "64000.10",
        "quantity": "0.00150000",
        "newClientOrderId": "o-1",
        "newOrderRespType": "FULL",
        "recvWindow": "5000",
        "timestamp": str(NOW_MS),
        "signature": req["form"]["signature"],
    }


def test_market_order_has_no_price_nor_time_in_force(fake: FakeBinance) -> None:
    result = _exchange(fake).submit(_order(price="0"), Decimal("64000"))
    assert isinstance(result, list) and {f.price for f in result} == {Decimal("64000.00000000")}
    form = fake.requests[0]["form"]
    assert form["type"] == "MARKET" and "price" not in form and "timeInForce" not in form


def test_tiny_quantities_are_sent_without_exponent(fake: FakeBinance) -> None:
    result = _exchange(fake).submit(_order(quantity="1E-8"), None)
    assert fake.requests[0]["form"]["quantity"] == "0.00000001"
    assert isinstance(result, list)


def test_wrong_secret_is_refused_by_the_signature_check(fake: FakeBinance) -> None:
    ex = BinanceSpotExchange(API_KEY, "not-the-secret", base_url=fake.base_url, clock_ms=lambda: NOW_MS)
    result = ex.submit(_order(), None)
    assert result == Rejection(Code.EXCHANGE_AUTH, "binance -1022: Signature for this request is not valid.")


def test_insufficient_balance_maps_to_exchange_rejected(fake: FakeBinance) -> None:
    fake.mode = "reject"
    result = _exchange(fake).submit(_order(), None)
    assert isinstance(result, Rejection)
    assert (result.code, result.retryable) == (Code.EXCHANGE_REJECTED, False)
    assert "-2010" in result.reason and "insufficient balance" in result.reason


def test_expired_ioc_is_not_filled(fake: FakeBinance) -> None:
    fake.mode = "expired"
    result = _exchange(fake).submit(_order(), None)
    assert isinstance(result, Rejection) and result.code == Code.NOT_FILLED and not result.retryable


@pytest.mark.parametrize(("mode", "wait"), [("429", "7"), ("418", "120")])
def test_rate_limit_and_ban_are_retryable_and_quote_retry_after(fake: FakeBinance, mode: str, wait: str) -> None:
    fake.mode = mode
    result = _exchange(fake).submit(_order(), None)
    assert isinstance(result, Rejection)
    assert (result.code, result.retryable) == (Code.EXCHANGE_FAILED, True)
    assert f"({mode})" in result.reason and f"Retry-After {wait} s" in result.reason


def test_server_error_is_retryable_and_warns_outcome_unknown(fake: FakeBinance) -> None:
    fake.mode = "500"
    result = _exchange(fake).submit(_order(), None)
    assert isinstance(result, Rejection) and result.retryable and result.code == Code.EXCHANGE_FAILED
    assert "HTTP 500" in result.reason and "origClientOrderId" in result.reason


def test_slow_answer_times_out_as_retryable(fake: FakeBinance) -> None:
    fake.mode, fake.slow_seconds = "slow", 30.0
    result = _exchange(fake, timeout=0.3).submit(_order(), None)
    assert isinstance(result, Rejection) and result.retryable and result.code == Code.EXCHANGE_FAILED
    assert "timed out" in result.reason


def test_malformed_success_is_not_retryable(fake: FakeBinance) -> None:
    fake.mode = "garbage"
    result = _exchange(fake).submit(_order(), None)
    assert isinstance(result, Rejection) and not result.retryable and "malformed" in result.reason


def test_refused_connection_is_retryable() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ex = BinanceSpotExchange(API_KEY, API_SECRET, base_url=f"http://127.0.0.1:{port}", timeout=2.0)
    result = ex.submit(_order(), None)
    assert isinstance(result, Rejection) and result.retryable and "cannot reach" in result.reason


def test_the_key_and_secret_never_show(fake: FakeBinance, caplog: pytest.LogCaptureFixture) -> None:
    ex = _exchange(fake)
    assert API_KEY not in repr(ex) and API_SECRET not in repr(ex) and "cdef" in repr(ex)
    caplog.set_level(logging.DEBUG)
    for mode in ("fill", "reject", "500"):
        fake.mode = mode
        ex.submit(_order(order_id=f"o-{mode}"), None)
    assert caplog.records, "the adapter logs its submissions"
    assert API_KEY not in caplog.text and API_SECRET not in caplog.text
    body = fake.requests[0]["body"]
    assert API_SECRET not in body and API_KEY not in urllib.parse.unquote(body)


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (
            400,
            b'{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}',
            Code.EXCHANGE_CLOCK,
            True,
        ),
        (400, b'{"code":-1013,"msg":"Filter failure: LOT_SIZE"}', Code.EXCHANGE_REJECTED, False),
        (
            400,
            b'{"code":-1111,"msg":"Precision is over the maximum defined for this asset."}',
            Code.EXCHANGE_REJECTED,
            False,
        ),
        (401, b'{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}', Code.EXCHANGE_AUTH, False),
        (
            400,
            b'{"code":-1000,"msg":"An unknown error occurred while processing the request."}',
            Code.EXCHANGE_FAILED,
            False,
        ),
        (403, b"<html>WAF</html>", Code.EXCHANGE_FAILED, False),
        (503, b'{"code":-1001,"msg":"Internal error"}', Code.EXCHANGE_FAILED, True),
    ],
)
def test_error_mapping(status: int, body: bytes, code: int, retryable: bool) -> None:
    result = map_error(status, body, None)
    assert (result.code, result.retryable) == (code, retryable)


@pytest.mark.parametrize(
    ("asset", "commission"),
    [
        ("USDT", Decimal("0.064")),  # quote asset: as is
        ("BTC", Decimal("0.00000100") * Decimal("64000.00")),  # base asset: valued at the fill price
        ("BNB", Decimal("0.00000100")),  # a third asset cannot be valued here: kept, asset recorded
    ],
)
def test_commission_assets(asset: str, commission: Decimal) -> None:
    fee = "0.064" if asset == "USDT" else "0.00000100"
    resp = {
        "status": "FILLED",
        "transactTime": 1,
        "fills": [{"price": "64000.00", "qty": "0.001", "commission": fee, "commissionAsset": asset, "tradeId": 9}],
    }
    (f,) = fills_from_response(_order(), resp)  # type: ignore[misc]
    assert (f.commission, f.commission_asset, f.trade_id, f.time_ns) == (commission, asset, "BTCUSDT:9", 1_000_000)


@pytest.mark.parametrize(
    "resp",
    [
        {"status": "FILLED", "transactTime": 1, "fills": [{"price": 64000.5, "qty": "1", "tradeId": 1}]},
        {"status": "FILLED", "transactTime": "1", "fills": [{"price": "1", "qty": "1", "tradeId": 1}]},
        {"status": "FILLED", "transactTime": 1, "fills": "none"},
    ],
)
def test_malformed_fills_raise(resp: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        fills_from_response(_order(), resp)
