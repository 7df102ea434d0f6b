"""``ttquant up``, ``worker``, ``status``, ``services``: running the local stack."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import ConfigError
from ..settings import Settings, default_tick_concurrency
from . import args as a
from .feed import add_feed_args


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from ..up import flower_options, run_up

    flower = None
    if args.flower:
        # Checked before anything starts: a refused Flower setting must not leave services running.
        flower, warning = flower_options(args.flower_address, args.flower_port,
                                         os.environ.get("FLOWER_BASIC_AUTH"))
        if warning:
            print(f"ttquant up: warning: {warning}", file=sys.stderr, flush=True)
    return run_up(settings, source=args.source, rate=args.rate, exchange=args.exchange,
                  duration=args.duration, concurrency=args.concurrency, gateway=not args.no_gateway,
                  flower=flower)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    settings = a.resolved(settings)
    env = dict(os.environ, DB_URI=settings.db_uri or "", CELERY_BROKER_URL=settings.broker_url or "")
    argv = [sys.executable, "-m", "celery", "-A", "ttquant_tasks", "worker", "-Q", args.queues,
            "-c", str(args.concurrency), "--loglevel", settings.log_level, "-O", "fair"]
    os.execvpe(argv[0], argv, env)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from ..services import status_all
    from ..status import show

    try:
        resolved = a.resolved(settings, start=False)
    except ConfigError as exc:
        if exc.key not in ("DB_URI", "CELERY_BROKER_URL"):
            raise
        # Embedded services not running: say so (status never starts anything).
        print(json.dumps({"services": status_all(settings.home), "error": str(exc)}, indent=2, default=str))
        return 1
    return show(resolved, as_json=args.json, watch=args.watch)


def cmd_services(args: argparse.Namespace, settings: Settings) -> int:
    from ..services import resolve, status_all, stop_all

    if args.action == "start":
        s = resolve(settings, start=True)
        print(json.dumps({"DB_URI": s.db_uri, "CELERY_BROKER_URL": s.broker_url}))
    elif args.action == "stop":
        print(json.dumps(stop_all(settings.home)))
    else:
        print(json.dumps(status_all(settings.home), indent=2, default=str))
    return 0


def register(sub: a.SubParsers) -> None:
    up = sub.add_parser("up", help="start the local stack: services, schema, worker, gateway, feed")
    add_feed_args(up)
    tick_workers = default_tick_concurrency()
    up.add_argument("--concurrency", type=a.positive_int, default=tick_workers,
                    help=f"tick worker processes (default: cores + 1, {tick_workers} here)")
    up.add_argument("--no-gateway", action="store_true", help="do not start the order gateway")
    up.add_argument("--flower", action="store_true",
                    help="also run Flower (workers with task events); basic auth from FLOWER_BASIC_AUTH=user:password, "
                         "required unless bound to loopback")
    up.add_argument("--flower-address", default="127.0.0.1", metavar="ADDR",
                    help="address Flower listens on (default 127.0.0.1)")
    up.add_argument("--flower-port", type=a.positive_int, default=5566, metavar="PORT",
                    help="Flower's port (default 5566)")
    up.set_defaults(handler=cmd_up)

    worker = sub.add_parser("worker", help="run a Celery worker (celery -A ttquant_tasks worker)")
    worker.add_argument("-Q", "--queues", default="ticks,orders,maintenance")
    worker.add_argument("-c", "--concurrency", type=a.positive_int, default=tick_workers,
                        help=f"worker processes (default: cores + 1, {tick_workers} here)")
    worker.set_defaults(handler=cmd_worker)

    status = sub.add_parser("status", help="one screen: services, workers, queues, ticks/s, lag, backup, size")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", type=a.seconds, nargs="?", const=2.0, default=None, metavar="S",
                        help="refresh every S seconds (default 2) until Ctrl-C")
    status.set_defaults(handler=cmd_status)

    services = sub.add_parser("services", help="the embedded PostgreSQL and Redis")
    services.add_argument("action", choices=["start", "stop", "status"])
    services.set_defaults(handler=cmd_services)
