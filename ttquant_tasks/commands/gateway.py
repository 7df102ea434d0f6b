"""``ttquant gateway``: orders from strategies (ZMQ PULL) -> risk -> paper/Binance -> trades (ZMQ PUB) + records."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from ..settings import Settings
from . import args as a

DEFAULT_RISK_FILE = Path(__file__).resolve().parent.parent / "gateway" / "default_risk.toml"


def build_exchange(settings: Settings) -> object:
    """The execution venue the settings ask for (paper by default)."""
    if settings.execution == "binance":
        from ..gateway.exchanges.binance import BinanceSpotExchange

        assert settings.binance_api_key and settings.binance_api_secret  # Settings checked both
        return BinanceSpotExchange(settings.binance_api_key, settings.binance_api_secret,
                                   base_url=settings.binance_order_url)
    from ..gateway.exchanges.paper import PaperExchange

    return PaperExchange(slippage_bps=settings.paper_slippage_bps, commission_bps=settings.paper_commission_bps)


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from ..gateway.runner import main

    risk = args.risk or settings.risk_file or DEFAULT_RISK_FILE
    return main(a.resolved(settings), risk_path=risk, md_connect=settings.md_connect,
                exchange=build_exchange(settings))  # type: ignore[arg-type]


def _connect_endpoint(bind: str) -> str:
    """The endpoint a client connects to for a bound ``tcp://*:PORT`` (loopback)."""
    return bind.replace("tcp://*:", "tcp://127.0.0.1:").replace("tcp://0.0.0.0:", "tcp://127.0.0.1:")


def _decimal(raw: str) -> str:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {raw!r}")
    return raw


def cmd_order(args: argparse.Namespace, settings: Settings) -> int:
    """Send one order like a strategy does and print the trades that answer it (JSON lines)."""
    import json
    import time
    import uuid

    import zmq

    from ..bus.codec import decode_trade, encode_order, trade_quantity

    order_id = args.order_id or f"cli-{uuid.uuid4().hex[:12]}"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"trade.")
    sub.connect(_connect_endpoint(settings.zmq_trade_endpoint))
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(_connect_endpoint(settings.zmq_pull_endpoint))
    time.sleep(0.3)  # let the SUB subscription reach the gateway before the answer is published
    push.send(encode_order(order_id=order_id, strategy_id=args.strategy, symbol=args.symbol.upper(),
                           price=float(args.price), quantity=args.qty, side=args.side, timestamp=time.time_ns()))
    deadline = time.monotonic() + args.timeout
    answered = 0
    try:
        while time.monotonic() < deadline:
            if not sub.poll(100):
                continue
            _, body = sub.recv_multipart()
            trade = decode_trade(body)
            if trade.order_id != order_id:
                continue
            answered += 1
            print(json.dumps({"trade_id": trade.trade_id, "order_id": trade.order_id, "status": trade.status,
                              "symbol": trade.symbol, "side": trade.side,
                              "price": trade.filled_price_str or repr(trade.filled_price),
                              "quantity": trade_quantity(trade), "commission": trade.commission,
                              "error_code": trade.error_code, "error_message": trade.error_message}), flush=True)
            if trade.status == "REJECTED" or args.first:
                break
            deadline = min(deadline, time.monotonic() + 0.5)  # partial fills arrive together
    finally:
        sub.close(0)
        push.close()
    if not answered:
        print(f"ttquant order: no trade for {order_id} within {args.timeout}s (is `ttquant gateway` running?)",
              file=sys.stderr)
        return 1
    return 0


def register(sub: a.SubParsers) -> None:
    p = sub.add_parser("gateway", help="run the order gateway (ZMQ PULL orders, PUB trades)")
    p.add_argument("--risk", type=Path, default=None,
                   help="risk limits TOML (default TTQUANT_RISK_FILE or the packaged default)")
    p.set_defaults(handler=cmd_gateway)

    o = sub.add_parser("order", help="send one order to the gateway, as a strategy does, and print its trades")
    o.add_argument("side", choices=["BUY", "SELL"])
    o.add_argument("qty", type=_decimal, help="quantity, exact decimal (e.g. 0.001)")
    o.add_argument("symbol", help="e.g. BTCUSDT")
    o.add_argument("--price", type=_decimal, default="0", help="limit price; 0 = market (default)")
    o.add_argument("--strategy", default="cli", help="strategy id (default: cli)")
    o.add_argument("--order-id", default=None, help="order id (default: a new one)")
    o.add_argument("--timeout", type=a.seconds, default=5.0, help="seconds to wait for the trade")
    o.add_argument("--first", action="store_true", help="stop at the first trade")
    o.set_defaults(handler=cmd_order)
