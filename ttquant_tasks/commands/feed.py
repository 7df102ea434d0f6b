"""``ttquant feed``: the feed process (ticks -> ZMQ PUB + chunks -> Celery)."""

from __future__ import annotations

import argparse

from ..settings import Settings
from . import args as a


def add_feed_args(p: argparse.ArgumentParser) -> None:
    """Feed options, shared by ``ttquant feed`` and ``ttquant up``."""
    p.add_argument("--source", choices=["sim"], default="sim", help="tick source (default: sim)")
    p.add_argument("--symbols", help="comma-separated symbols (default: TTQUANT_SYMBOLS or BTCUSDT,ETHUSDT)")
    p.add_argument("--rate", type=a.rate, default=2000.0, help="sim ticks per second, all symbols (or 'max')")
    p.add_argument("--exchange", default=None, help="exchange name for sim ticks (default: sim)")
    p.add_argument("--duration", type=a.seconds, default=None, help="stop after S seconds")


def cmd_feed(args: argparse.Namespace, settings: Settings) -> int:
    from ..runtime import run_feed_command

    return run_feed_command(a.resolved(settings), source=args.source, rate=args.rate,
                            exchange=args.exchange, duration=args.duration)


def register(sub: a.SubParsers) -> None:
    p = sub.add_parser("feed", help="run the feed: ticks -> ZMQ PUB + chunks -> Celery")
    add_feed_args(p)
    p.set_defaults(handler=cmd_feed)
