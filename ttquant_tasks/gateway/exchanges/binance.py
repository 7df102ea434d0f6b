"""Binance spot REST adapter: ``POST /api/v3/order``, signed, with urllib.

A SIGNED request carries ``timestamp`` (ms), ``recvWindow`` and ``signature`` = hex HMAC-SHA256 of
the exact urlencoded parameter string under the API secret; the key goes in ``X-MBX-APIKEY``.
Parameters are sent as a form body (Binance signs query string + body; we send only a body).

Orders: price 0 -> ``type=MARKET``; otherwise ``type=LIMIT`` with ``timeInForce`` (IOC by
default, so the response is final and carries every fill; with GTC an order that rests returns
``[]`` -- later fills are not tracked by this adapter).  ``newClientOrderId`` is the strategy's
``order_id`` and ``newOrderRespType=FULL`` asks for the ``fills`` array, whose decimal strings
become ``Fill`` values unchanged.

Failures map to rejections (codes in ``risk``'s table), never exceptions:

    HTTP 429 / 418 (rate limited / banned)   2001 retryable, Retry-After quoted
    HTTP 5xx, timeout                        2001 retryable; the order may have executed: query
                                             it by origClientOrderId before resubmitting
    connection refused / DNS                 2001 retryable (nothing was sent)
    JSON {"code": -2010, "msg": ...}         2003 (-2010, -1013, -11xx), 2004 (-1022, -2014, -2015),
                                             2005 retryable (-1021 clock skew), else 2001
    EXPIRED / no fills on IOC                2002 not filled

The API key and secret never appear in logs or reprs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from ..orders import Code, Fill, OrderRequest, Rejection

log = logging.getLogger(__name__)

ORDER_PATH = "/api/v3/order"
_NS_PER_MS = 1_000_000
_RETRY_HTTP = frozenset({418, 429})
_REJECTED = frozenset({-2010, -1013})
_AUTH = frozenset({-1022, -2014, -2015})
_CLOCK = frozenset({-1021})
_UNKNOWN_OUTCOME = "execution status unknown: query the order by origClientOrderId before resubmitting"


def sign(query: str, secret: str) -> str:
    """Hex HMAC-SHA256 of ``query`` under ``secret`` (Binance SIGNED endpoints)."""
    return hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()


def _plain(value: Decimal) -> str:
    """Decimal as Binance wants it: positional notation, never an exponent."""
    return format(value, "f")


def _mask(secret: str) -> str:
    return f"...{secret[-4:]}" if len(secret) > 12 else "***"


def map_error(status: int, body: bytes, retry_after: str | None) -> Rejection:
    """A non-2xx answer as a rejection: HTTP status first, then the Binance error code."""
    if status in _RETRY_HTTP:
        wait = f", Retry-After {retry_after} s" if retry_after else ""
        what = "IP banned (418)" if status == 418 else "rate limited (429)"
        return Rejection(Code.EXCHANGE_FAILED, f"binance {what}{wait}", retryable=True)
    if status >= 500:
        return Rejection(Code.EXCHANGE_FAILED, f"binance HTTP {status}; {_UNKNOWN_OUTCOME}", retryable=True)
    try:
        err = json.loads(body)
        code, msg = int(err["code"]), str(err["msg"])
    except (ValueError, KeyError, TypeError):
        return Rejection(Code.EXCHANGE_FAILED, f"binance HTTP {status}: {body[:200]!r}")
    text = f"binance {code}: {msg}"
    if code in _CLOCK:
        return Rejection(Code.EXCHANGE_CLOCK, text, retryable=True)
    if code in _AUTH:
        return Rejection(Code.EXCHANGE_AUTH, text)
    if code in _REJECTED or -1199 <= code <= -1100:
        return Rejection(Code.EXCHANGE_REJECTED, text)
    return Rejection(Code.EXCHANGE_FAILED, text)


def _decimal(raw: Any, name: str) -> Decimal:
    if not isinstance(raw, str):
        raise ValueError(f"{name} {raw!r} is not a decimal string")
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{name} {raw!r} is not a decimal") from None


def _commission_in_quote(order: OrderRequest, price: Decimal, amount: Decimal, asset: str) -> Decimal:
    # Fees charged in the base asset (a BUY without BNB discount) are worth price x amount in quote.
    # Fees in a third asset (BNB) cannot be valued here: they are kept as is and the asset recorded.
    if asset and order.symbol.startswith(asset) and not order.symbol.endswith(asset):
        return amount * price
    return amount


def fills_from_response(order: OrderRequest, resp: Mapping[str, Any]) -> list[Fill] | Rejection:
    """Fills of a FULL order response; pure.  ``ValueError`` on a malformed response.

    ``trade_id`` is ``SYMBOL:tradeId`` (Binance trade ids are unique per symbol only).
    """
    status = resp.get("status")
    raw_fills = resp.get("fills", [])
    if not isinstance(raw_fills, list):
        raise ValueError(f"fills {raw_fills!r} is not a list")
    if not raw_fills:
        if status in ("EXPIRED", "EXPIRED_IN_MATCH", "CANCELED", "REJECTED"):
            return Rejection(Code.NOT_FILLED, f"binance order {order.order_id} {status} without fills")
        return []
    t_ms = resp.get("transactTime")
    if isinstance(t_ms, bool) or not isinstance(t_ms, int):
        raise ValueError(f"transactTime {t_ms!r} is not an integer (ms)")
    fills = []
    for f in raw_fills:
        price = _decimal(f.get("price"), "fill price")
        qty = _decimal(f.get("qty"), "fill qty")
        asset = str(f.get("commissionAsset", ""))
        fee = _commission_in_quote(order, price, _decimal(f.get("commission", "0"), "commission"), asset)
        fills.append(
            Fill(
                trade_id=f"{order.symbol}:{f.get('tradeId')}",
                order_id=order.order_id,
                strategy_id=order.strategy_id,
                symbol=order.symbol,
                side=order.side,
                price=price,
                quantity=qty,
                commission=fee,
                time_ns=t_ms * _NS_PER_MS,
                commission_asset=asset,
            )
        )
    return fills


class BinanceSpotExchange:
    """Binance spot (testnet by default).  ``timeout`` in seconds; ``recv_window`` in ms.

    ``clock_ms`` gives the request timestamp (ms since epoch, UTC); tests inject it.
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        base_url: str = "https://testnet.binance.vision",
        recv_window: int = 5000,
        timeout: float = 5.0,
        time_in_force: str = "IOC",
        clock_ms: Callable[[], int] = lambda: time.time_ns() // _NS_PER_MS,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must be non-empty")
        if not 0 < recv_window <= 60_000:
            raise ValueError(f"recv_window must be in (0, 60000] ms, got {recv_window}")
        if time_in_force not in ("GTC", "IOC", "FOK"):
            raise ValueError(f"time_in_force must be GTC, IOC or FOK, got {time_in_force!r}")
        self._api_key = api_key
        self._api_secret = api_secret
        self.base_url = base_url.rstrip("/")
        self.recv_window = recv_window
        self.timeout = timeout
        self.time_in_force = time_in_force
        self._clock_ms = clock_ms

    def __repr__(self) -> str:
        return (
            f"BinanceSpotExchange(base_url={self.base_url!r}, api_key={_mask(self._api_key)!r}, "
            f"recv_window={self.recv_window}, timeout={self.timeout})"
        )

    def order_params(self, order: OrderRequest) -> list[tuple[str, str]]:
        """The unsigned parameters of the order, in the order they are sent and signed."""
        params = [("symbol", order.symbol), ("side", order.side)]
        if order.is_market:
            params.append(("type", "MARKET"))
        else:
            params += [("type", "LIMIT"), ("timeInForce", self.time_in_force), ("price", _plain(order.price))]
        params += [
            ("quantity", _plain(order.quantity)),
            ("newClientOrderId", order.order_id),
            ("newOrderRespType", "FULL"),
            ("recvWindow", str(self.recv_window)),
            ("timestamp", str(self._clock_ms())),
        ]
        return params

    def signed_body(self, order: OrderRequest) -> str:
        query = urllib.parse.urlencode(self.order_params(order))
        return f"{query}&signature={sign(query, self._api_secret)}"

    def submit(self, order: OrderRequest, last_price: Decimal | None) -> list[Fill] | Rejection:
        """Send the order; the answer as fills or a rejection (see module doc).  Never raises."""
        req = urllib.request.Request(
            self.base_url + ORDER_PATH,
            data=self.signed_body(order).encode(),
            method="POST",
            headers={"X-MBX-APIKEY": self._api_key, "Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                rejection = map_error(exc.code, exc.read(), exc.headers.get("Retry-After"))
            log.warning("order %s rejected by binance: %s", order.order_id, rejection.reason)
            return rejection
        except TimeoutError as exc:
            return self._transport_failure(order, f"timed out after {self.timeout} s ({exc}); {_UNKNOWN_OUTCOME}")
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                return self._transport_failure(order, f"timed out after {self.timeout} s; {_UNKNOWN_OUTCOME}")
            return self._transport_failure(order, f"cannot reach {self.base_url}: {exc.reason}")
        except OSError as exc:  # connection reset while reading, etc.
            return self._transport_failure(order, f"connection failed: {exc}; {_UNKNOWN_OUTCOME}")
        try:
            parsed = json.loads(body)
            if not isinstance(parsed, Mapping):
                raise ValueError(f"expected a JSON object, got {type(parsed).__name__}")
            result = fills_from_response(order, parsed)
        except ValueError as exc:
            log.error("order %s: malformed binance response: %s", order.order_id, exc)
            return Rejection(Code.EXCHANGE_FAILED, f"malformed binance response ({exc}); {_UNKNOWN_OUTCOME}")
        log.info(
            "order %s sent to binance: %s",
            order.order_id,
            "rejected" if isinstance(result, Rejection) else f"{len(result)} fill(s)",
        )
        return result

    def _transport_failure(self, order: OrderRequest, reason: str) -> Rejection:
        log.warning("order %s: binance %s", order.order_id, reason)
        return Rejection(Code.EXCHANGE_FAILED, f"binance {reason}", retryable=True)
