"""``ttquant db init|upgrade`` and ``ttquant flush``."""

from __future__ import annotations

import argparse
import json

from ..settings import Settings
from . import args as a


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from ..storage.migrate import init_db, upgrade_db

    settings = a.resolved(settings, broker=False)
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


def cmd_deadletters(args: argparse.Namespace, settings: Settings) -> int:
    """List dead letters, or send them back to their tasks once the cause is fixed."""
    from ..storage import deadletters
    from ..storage.engine import get_engine

    resolved = a.resolved(settings, broker=bool(args.replay))
    engine = get_engine(resolved.db_uri)
    if not args.replay:
        print(json.dumps(deadletters.summary(engine), indent=2, default=str))
        return 0
    from ..tasks.app import make_app

    app = make_app(resolved)
    sent = 0
    for dl_id, task, payload in deadletters.pending(engine, task=args.task):
        if task not in app.tasks:
            continue  # not one of ours (or a task that no longer exists): leave it
        app.send_task(task, args=[payload])  # re-sent before removal: a crash leaves a copy, never none
        deadletters.remove(engine, dl_id)
        sent += 1
    print(json.dumps({"replayed": sent}))
    return 0


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

    dead = sub.add_parser("deadletters", help="list dead letters by task and reason; --replay sends them back")
    dead.add_argument("--replay", action="store_true", help="re-send each dead letter to its task, then remove it")
    dead.add_argument("--task", default=None, help="only this task (e.g. ttquant.write_ticks)")
    dead.set_defaults(handler=cmd_deadletters)
