"""``ttquant feed``: the feed process (ticks -> ZMQ PUB + chunks -> Celery)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..settings import Settings
from . import MODULES
from . import args as a


def speed(raw: str) -> float | None:
    """Replay pace: ``max`` (None: as fast as possible) or a factor of the recorded pace (> 0)."""
    if raw == "max":
        return None
    try:
        v = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a factor like 1, 10 or 'max', got {raw!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {raw!r}")
    return v


def add_feed_args(p: argparse.ArgumentParser, *, replay: bool = False) -> None:
    """Feed options, shared by ``ttquant feed`` and ``ttquant up`` (``replay`` adds the replay source)."""
    sources = ["binance", "sim", *(["replay"] if replay else [])]
    p.add_argument("--source", choices=sources, default="binance",
                   help="tick source: binance (live, default), sim" + (", replay FILE" if replay else ""))
    p.add_argument("--symbols", help="comma-separated symbols (default: TTQUANT_SYMBOLS or BTCUSDT,ETHUSDT)")
    p.add_argument("--rate", type=a.rate, default=2000.0, help="sim ticks per second, all symbols (or 'max')")
    p.add_argument("--exchange", default=None, help="exchange name for sim ticks (default: sim)")
    p.add_argument("--duration", type=a.seconds, default=None, help="stop after S seconds")


def cmd_feed(args: argparse.Namespace, settings: Settings) -> int:
    from ..runtime import run_feed_command

    if args.source == "replay" and args.file is None:
        raise ConfigError("FILE", "--source replay needs a recording: ttquant feed --source replay FILE")
    if args.source != "replay" and args.file is not None:
        raise ConfigError("FILE", f"a recording is only read with --source replay (got --source {args.source})")
    if args.file is not None and not args.file.is_file():
        raise ConfigError("FILE", f"recording not found: {args.file}")
    return run_feed_command(a.resolved(settings), source=args.source, rate=args.rate, exchange=args.exchange,
                            duration=args.duration, file=args.file, speed=args.speed)


def register(sub: a.SubParsers) -> None:
    p = sub.add_parser("feed", help="run the feed: ticks -> ZMQ PUB + chunks -> Celery")
    add_feed_args(p, replay=True)
    p.add_argument("file", nargs="?", type=Path, default=None, metavar="FILE",
                   help="recording (from `ttquant record`) to play with --source replay")
    p.add_argument("--speed", type=speed, default=1.0,
                   help="replay pace: N times the recorded pace, or 'max' for as fast as possible (default 1)")
    p.set_defaults(handler=cmd_feed)
    if "market" not in MODULES:  # until commands/__init__.py lists it: audit and record live there
        from . import market

        market.register(sub)
