"""``ttquant db init|upgrade`` and ``ttquant flush``."""

from __future__ import annotations

import argparse
import json

from ..settings import Settings
from . import args as a


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from ..storage.migrate import init_db, upgrade_db

    settings = a.resolved(settings)
    if args.db_command == "init":
        result = init_db(settings.db_uri, flavour=args.flavour)
    else:
        result = upgrade_db(settings.db_uri)
    print(json.dumps(result, default=str))
    return 0


def cmd_flush(args: argparse.Namespace, settings: Settings) -> int:
    from ..tasks.app import make_app
    from ..tasks.parking import flush

    result = flush(make_app(a.resolved(settings)), limit=args.limit)
    print(json.dumps(result))
    return 0 if result.get("database") == "up" else 1


def register(sub: a.SubParsers) -> None:
    db = sub.add_parser("db", help="schema: init or upgrade")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    init = dbsub.add_parser("init", help="apply sql/ (idempotent)")
    init.add_argument("--flavour", choices=["auto", "plain", "timescale"], default="auto")
    dbsub.add_parser("upgrade", help="apply schema versions not yet applied")
    db.set_defaults(handler=cmd_db)

    flush = sub.add_parser("flush", help="move parked chunks back to the work queues")
    flush.add_argument("--limit", type=a.positive_int, default=100_000)
    flush.set_defaults(handler=cmd_flush)
