"""A tiny stand-in for Binance's ``POST /api/v3/order`` on 127.0.0.1 (random port), for tests.

It checks what the real venue checks first -- the API key header and the HMAC signature over the
exact body -- and then answers as the test scripted with ``FakeBinance.mode``:

    "fill"      FULL response; the order fills in two parts (60 % + 40 % of the quantity) at the
                limit price (or ``market_price`` for MARKET orders), commission 0.1 % in USDT
    "expired"   status EXPIRED, no fills (an IOC limit that did not cross)
    "reject"    HTTP 400 {"code": -2010, "msg": "Account has insufficient balance ..."}
    "429"       HTTP 429 with Retry-After: 7
    "418"       HTTP 418 with Retry-After: 120
    "500"       HTTP 500 with an HTML body
    "slow"      waits ``slow_seconds`` before answering (bounded: the stop event cuts it short)
    "garbage"   HTTP 200 with a body that is not JSON

Every request is recorded (path, headers, parsed form) in ``requests`` for assertions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "test-key-0123456789abcdef"
API_SECRET = "test-secret-fedcba9876543210"


class FakeBinance:
    def __init__(self, api_key: str = API_KEY, api_secret: str = API_SECRET) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.mode = "fill"
        self.market_price = Decimal("64000.00")
        self.slow_seconds = 5.0
        self.requests: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -------------------------------------------------------------- answers

    def answer(self, headers: dict[str, str], body: str) -> tuple[int, dict[str, str], bytes]:
        form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        self.requests.append({"headers": headers, "form": form, "body": body})
        if headers.get("x-mbx-apikey") != self.api_key:
            return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        unsigned, sep, signature = body.rpartition("&signature=")
        expected = hmac.new(self.api_secret.encode(), unsigned.encode(), hashlib.sha256).hexdigest()
        if not sep or not hmac.compare_digest(signature, expected):
            return _error(400, -1022, "Signature for this request is not valid.")
        for key in ("symbol", "side", "type", "quantity", "timestamp", "recvWindow", "newClientOrderId"):
            if key not in form:
                return _error(400, -1102, f"Mandatory parameter '{key}' was not sent.")
        mode = self.mode
        if mode == "reject":
            return _error(400, -2010, "Account has insufficient balance for requested action.")
        if mode in ("429", "418"):
            code, wait = (429, "7") if mode == "429" else (418, "120")
            status, hdrs, payload = _error(code, -1003, "Too many requests.")
            return status, {**hdrs, "Retry-After": wait}, payload
        if mode == "500":
            return 500, {"Content-Type": "text/html"}, b"<html>Internal Server Error</html>"
        if mode == "garbage":
            return 200, {"Content-Type": "application/json"}, b"{not json"
        if mode == "slow":
            self.stop.wait(self.slow_seconds)
        return 200, {"Content-Type": "application/json"}, json.dumps(self._order_response(form)).encode()

    def _order_response(self, form: dict[str, str]) -> dict[str, Any]:
        base = {
            "symbol": form["symbol"],
            "orderId": 28,
            "clientOrderId": form["newClientOrderId"],
            "transactTime": 1507725176595,
            "origQty": form["quantity"],
            "type": form["type"],
            "side": form["side"],
        }
        if self.mode == "expired":
            return {**base, "status": "EXPIRED", "executedQty": "0.00000000", "fills": []}
        qty = Decimal(form["quantity"])
        price = Decimal(form["price"]) if form["type"] == "LIMIT" else self.market_price
        first = (qty * Decimal("0.6")).quantize(Decimal("0.00000001"))
        fills = []
        for i, part in enumerate((first, qty - first)):
            fills.append(
                {
                    "price": f"{price:.8f}",
                    "qty": f"{part:.8f}",
                    "commission": f"{price * part * Decimal('0.001'):.8f}",
                    "commissionAsset": "USDT",
                    "tradeId": 56 + i,
                }
            )
        return {**base, "status": "FILLED", "executedQty": f"{qty:.8f}", "fills": fills}


def _error(status: int, code: int, msg: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps({"code": code, "msg": msg}).encode()


def _handler(fake: FakeBinance) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode()
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path != "/api/v3/order":
                status, hdrs, payload = _error(404, -1000, f"no such path {self.path}")
            else:
                status, hdrs, payload = fake.answer(headers, body)
            try:
                self.send_response(status)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


@contextmanager
def running_fake_binance() -> Iterator[FakeBinance]:
    """Start the fake on a random loopback port; stop it (and any slow answer) on exit."""
    fake = FakeBinance()
    thread = threading.Thread(target=fake.server.serve_forever, args=(0.05,), name="fake-binance", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.stop.set()
        fake.server.shutdown()
        fake.server.server_close()
        thread.join(timeout=10)
