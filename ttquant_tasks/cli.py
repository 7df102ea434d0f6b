"""The ``ttquant`` command.

    ttquant up --source sim [--symbols …] [--rate N] [--duration S]   the whole local stack
    ttquant feed --source sim …                                        the feed process alone
    ttquant gateway [--risk FILE]                                      the order gateway
    ttquant worker [-Q ticks,orders,maintenance] [-c N]                a Celery worker
    ttquant db init [--flavour auto|plain|timescale] | db upgrade      schema
    ttquant flush                                                      parked chunks back to work
    ttquant status                                                     one screen of figures
    ttquant services start|stop|status                                 the embedded PostgreSQL/Redis

Subcommands live in :mod:`ttquant_tasks.commands`.  Every command builds one
:class:`~ttquant_tasks.settings.Settings` from the environment and its flags; a bad value exits
with status 2 and a message naming the key or flag.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .commands import register_all
from .errors import ConfigError, TTQuantError
from .settings import Settings, parse_symbols


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttquant", description="TTQuant persistence backend on Celery")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default TTQUANT_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_all(sub)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "symbols", None):
        overrides["symbols"] = parse_symbols(args.symbols)
    if args.log_level:
        overrides["log_level"] = args.log_level
    return Settings.from_env(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return int(args.handler(args, settings))
    except ConfigError as exc:
        print(f"ttquant: configuration error: {exc}", file=sys.stderr)
        return 2
    except TTQuantError as exc:
        print(f"ttquant: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
