"""``ttquant gateway``: orders from strategies (ZMQ PULL) -> risk -> paper/Binance -> trades (ZMQ PUB) + records."""

from __future__ import annotations

import argparse
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


def register(sub: a.SubParsers) -> None:
    p = sub.add_parser("gateway", help="run the order gateway (ZMQ PULL orders, PUB trades)")
    p.add_argument("--risk", type=Path, default=None,
                   help="risk limits TOML (default TTQUANT_RISK_FILE or the packaged default)")
    p.set_defaults(handler=cmd_gateway)
