"""``ttquant bench``: measure the pipeline against its baselines in one run (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import Settings
from . import args as a


def _scale(raw: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {raw!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {raw!r}")
    return v


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from ..bench.runner import run_bench

    report, json_path, md_path = run_bench(a.resolved(settings), quick=args.quick, scale=args.scale,
                                           out_dir=args.out, profile_dir=args.profile)
    print(md_path.read_text(), end="")
    print(f"\nreport: {json_path}\ntable:  {md_path}")
    return 1 if any(k.startswith("error_") for k in report) else 0


def register(sub: a.SubParsers) -> None:
    p = sub.add_parser("bench", help="benchmarks: baselines, end to end, hot path, latencies, outage")
    p.add_argument("--quick", action="store_true", help="small sizes, under 3 minutes (default: full, ~20 min)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for the report files")
    # Hidden: test-size runs (0.01 in the smoke test) and profiles of the feed (cProfile dumps).
    p.add_argument("--scale", type=_scale, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--profile", type=Path, default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_bench)
