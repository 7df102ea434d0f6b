"""``ttquant audit`` (every trade id stored once?) and ``ttquant record`` (raw Binance frames to a file).

``ttquant audit`` exit status, for cron and CI: 0 clean; 1 a missing id, a duplicate, or a requested
symbol without rows in the window; 2 bad arguments or settings; 3 the database could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import TTQuantError
from ..settings import Settings, parse_symbols
from ..storage.audit import SymbolAudit
from . import args as a

CLEAN, DIRTY, UNREADABLE = 0, 1, 3


def iso_time(raw: str) -> datetime:
    """An ISO 8601 date or time; without a zone it is UTC (``2025-01-31``, ``2025-01-31T12:00Z``)."""
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time like 2025-01-31T12:00:00Z, got {raw!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def exit_status(audits: Sequence[SymbolAudit], requested: Sequence[str] | None) -> int:
    """0 when every audited symbol is clean and every requested symbol has rows, else 1."""
    found = {x.symbol for x in audits}
    if requested is not None and not set(requested) <= found:
        return DIRTY
    return CLEAN if all(x.clean for x in audits) else DIRTY


def report_json(audits: Sequence[SymbolAudit], requested: Sequence[str] | None, window: dict[str, Any]) -> str:
    no_rows = sorted(set(requested or ()) - {x.symbol for x in audits})
    return json.dumps({**window, "symbols": [x.as_json() for x in audits], "symbols_without_rows": no_rows,
                       "clean": exit_status(audits, requested) == CLEAN}, indent=2)


def render(audits: Sequence[SymbolAudit], requested: Sequence[str] | None) -> str:
    """Human-readable report: one line per symbol, then its missing ranges, duplicates and known gaps."""
    lines = []
    for x in audits:
        verdict = "OK" if x.clean else "GAPS/DUPLICATES"
        lines.append(f"{x.symbol}: {x.rows} rows, ids {x.first_id}..{x.last_id}, {x.missing_ids} missing, "
                     f"{x.duplicate_rows} duplicate rows, {len(x.known_gaps)} known gaps: {verdict}")
        lines += [f"  missing {lo}..{hi} ({hi - lo + 1} ids)" for lo, hi in x.missing]
        lines += [f"  duplicate id {tid} x{n}" for tid, n in x.duplicates]
        lines += [f"  known gap {g.from_id}..{g.to_id} {'filled ' + g.filled_at.isoformat() if g.filled_at else 'open'}"
                  f" (detected {g.detected_at.isoformat()}): {g.reason}" for g in x.known_gaps]
    for symbol in sorted(set(requested or ()) - {x.symbol for x in audits}):
        lines.append(f"{symbol}: no rows in the window: NOT CLEAN")
    if not lines:
        lines.append("no rows in the window")
    return "\n".join(lines)


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from ..storage.audit import audit_trades
    from ..storage.engine import make_engine

    until = args.until or datetime.now(UTC)
    if args.since >= until:
        print("ttquant audit: --since must be before --until", file=sys.stderr)
        return 2
    requested = list(dict.fromkeys(s for raw in args.symbol for s in parse_symbols(raw, "--symbol"))) or None
    exchange = args.exchange or settings.exchange
    try:
        uri = settings.read_uri or a.resolved(settings, start=False, broker=False).read_uri
        engine = make_engine(uri)
        try:
            audits = audit_trades(engine, exchange, args.since, until, requested)
        finally:
            engine.dispose()
    except TTQuantError as exc:
        print(f"ttquant audit: cannot read the database: {exc}", file=sys.stderr)
        return UNREADABLE
    if args.json:
        window = {"exchange": exchange, "since": args.since.isoformat(), "until": until.isoformat()}
        print(report_json(audits, requested, window))
    else:
        print(render(audits, requested))
    return exit_status(audits, requested)


def cmd_record(args: argparse.Namespace, settings: Settings) -> int:
    from ..runtime import run_record_command

    return run_record_command(settings, args.file, duration=args.duration)


def register(sub: a.SubParsers) -> None:
    audit = sub.add_parser("audit", help="check stored trade ids: rows, first/last, missing ranges, duplicates")
    audit.add_argument("--symbol", action="append", default=[],
                       help="symbol(s) to audit, repeatable or comma-separated (default: all in the window)")
    audit.add_argument("--exchange", default=None, help="exchange (default: EXCHANGE, i.e. binance)")
    audit.add_argument("--since", type=iso_time, required=True, help="window start, ISO time (UTC when no zone)")
    audit.add_argument("--until", type=iso_time, default=None, help="window end, exclusive (default: now)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.set_defaults(handler=cmd_audit)

    record = sub.add_parser("record", help="record raw Binance frames to FILE (JSON lines; .gz compresses)")
    record.add_argument("file", type=Path, metavar="FILE")
    record.add_argument("--symbols", help="comma-separated symbols (default: TTQUANT_SYMBOLS or BTCUSDT,ETHUSDT)")
    record.add_argument("--duration", type=a.seconds, default=None, help="stop after S seconds")
    record.set_defaults(handler=cmd_record)
