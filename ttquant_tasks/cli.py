"""The ``ttquant`` command.

    ttquant up --source sim [--symbols …] [--rate N] [--duration S]   the whole local stack
    ttquant feed --source sim …                                        the feed process alone
    ttquant worker [-Q ticks,orders,maintenance] [-c N]                a Celery worker
    ttquant db init [--flavour auto|plain|timescale] | db upgrade      schema
    ttquant flush                                                      parked chunks back to work
    ttquant status                                                     one screen of figures
    ttquant services start|stop|status                                 the embedded PostgreSQL/Redis

Every command builds one :class:`~ttquant_tasks.settings.Settings` from the environment and its
flags; a bad value exits with status 2 and a message naming the key or flag.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError, TTQuantError
from .settings import Settings, parse_symbols


def _rate(raw: str) -> float:
    if raw == "max":
        return 0.0
    try:
        v = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rate must be ticks per second or 'max', got {raw!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"--rate must be > 0, got {raw!r}")
    return v


def _seconds(raw: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {raw!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {raw!r}")
    return v


def _positive_int(raw: str) -> int:
    try:
        v = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}")
    return v


def _add_feed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=["sim"], default="sim", help="tick source (default: sim)")
    p.add_argument("--symbols", help="comma-separated symbols (default: TTQUANT_SYMBOLS or BTCUSDT,ETHUSDT)")
    p.add_argument("--rate", type=_rate, default=2000.0, help="sim ticks per second, all symbols (or 'max')")
    p.add_argument("--exchange", default=None, help="exchange name for sim ticks (default: sim)")
    p.add_argument("--duration", type=_seconds, default=None, help="stop after S seconds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttquant", description="TTQuant persistence backend on Celery")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default TTQUANT_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the local stack: services, schema, worker, feed")
    _add_feed_args(up)
    up.add_argument("--concurrency", type=_positive_int, default=2, help="worker processes (default 2)")

    feed = sub.add_parser("feed", help="run the feed: ticks -> ZMQ PUB + chunks -> Celery")
    _add_feed_args(feed)

    worker = sub.add_parser("worker", help="run a Celery worker (celery -A ttquant_tasks worker)")
    worker.add_argument("-Q", "--queues", default="ticks,orders,maintenance")
    worker.add_argument("-c", "--concurrency", type=_positive_int, default=2)

    db = sub.add_parser("db", help="schema: init or upgrade")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    init = dbsub.add_parser("init", help="apply sql/ (idempotent)")
    init.add_argument("--flavour", choices=["auto", "plain", "timescale"], default="auto")
    dbsub.add_parser("upgrade", help="apply schema versions not yet applied")

    flush = sub.add_parser("flush", help="move parked chunks back to the work queues")
    flush.add_argument("--limit", type=_positive_int, default=100_000)

    status = sub.add_parser("status", help="row counts, queue depths, parked chunks")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    services = sub.add_parser("services", help="the embedded PostgreSQL and Redis")
    services.add_argument("action", choices=["start", "stop", "status"])
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "symbols", None):
        overrides["symbols"] = parse_symbols(args.symbols)
    if args.log_level:
        overrides["log_level"] = args.log_level.upper()
    return Settings.from_env(**overrides)


def _resolved(settings: Settings, start: bool = True) -> Settings:
    from .services import resolve

    return resolve(settings, start=start)


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from .storage import migrate

    settings = _resolved(settings)
    if args.db_command == "init":
        result = migrate.init_db(settings.db_uri, flavour=args.flavour)
    else:
        result = migrate.upgrade_db(settings.db_uri)
    print(json.dumps(result, default=str) if not isinstance(result, str) else result)
    return 0


def cmd_flush(args: argparse.Namespace, settings: Settings) -> int:
    from .tasks.app import make_app
    from .tasks.parking import flush

    app = make_app(_resolved(settings))
    result = flush(app, limit=args.limit)
    print(json.dumps(result))
    return 0 if result.get("database") == "up" else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from .services import status_all
    from .status import collect, render

    try:
        resolved = _resolved(settings, start=False)
    except ConfigError as exc:
        if exc.key not in ("DB_URI", "CELERY_BROKER_URL"):
            raise
        # Embedded services not running: say so (status must never start anything).
        print(json.dumps({"services": status_all(settings.home), "error": str(exc)}, indent=2, default=str))
        return 1
    report = collect(resolved)
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    return 0


def cmd_services(args: argparse.Namespace, settings: Settings) -> int:
    from .services import resolve, status_all, stop_all

    if args.action == "start":
        s = resolve(settings, start=True)
        print(json.dumps({"DB_URI": s.db_uri, "CELERY_BROKER_URL": s.broker_url}))
    elif args.action == "stop":
        print(json.dumps(stop_all(settings.home)))
    else:
        print(json.dumps(status_all(settings.home), indent=2, default=str))
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    settings = _resolved(settings)
    env = dict(os.environ, DB_URI=settings.db_uri or "", CELERY_BROKER_URL=settings.broker_url or "")
    argv = [sys.executable, "-m", "celery", "-A", "ttquant_tasks", "worker", "-Q", args.queues,
            "-c", str(args.concurrency), "--loglevel", settings.log_level, "-O", "fair"]
    os.execvpe(argv[0], argv, env)


def cmd_feed(args: argparse.Namespace, settings: Settings) -> int:
    from .runtime import run_feed_command

    return run_feed_command(_resolved(settings), source=args.source, rate=args.rate,
                            exchange=args.exchange, duration=args.duration)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from .up import run_up

    return run_up(settings, source=args.source, rate=args.rate, exchange=args.exchange,
                  duration=args.duration, concurrency=args.concurrency)


COMMANDS = {
    "db": cmd_db, "flush": cmd_flush, "status": cmd_status, "services": cmd_services,
    "worker": cmd_worker, "feed": cmd_feed, "up": cmd_up,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        logging.basicConfig(level=settings.log_level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return COMMANDS[args.command](args, settings)
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
