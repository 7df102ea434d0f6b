"""Measurement 4: the feed's per-tick hot path (ZMQ encode + send, chunk append, chunk hand-over),
p50/p99/max in µs, healthy and under each outage, measured inside the feed process
(:mod:`.feedproc` wraps ``_Feed.on_tick``).

Conditions: ``healthy``; ``db_down`` (the worker's database behind a cut :class:`.gate.Gate`:
tasks fail and retry while the feed runs); ``broker_refused`` (broker URL on a closed port);
``broker_hung`` (a listener that accepts and never answers).  Same paced rate for all, so the
figures differ only by the condition.  The sim source has no parse step; the Binance frame parse
is timed separately (``parse_us_p50``), in this process, on a recorded-shape frame.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import procs
from .report import Figure, ratio, summary

_FRAME = json.dumps({"stream": "btcusdt@trade", "data": {
    "e": "trade", "E": 1732540000125, "s": "BTCUSDT", "t": 4123456789, "p": "64321.10000000",
    "q": "0.00120000", "T": 1732540000123, "m": True, "M": True}})


def run_condition(name: str, env: dict[str, str], log_dir: Path, rate: float, duration: float,
                  symbols: list[str]) -> dict[str, Figure]:
    config: dict[str, Any] = {"exchange": f"bench-hot-{name.replace('_', '-')}", "symbols": symbols,
                              "rate": rate, "duration": duration, "instrument": True}
    feed = procs.run_feed_child(env, log_dir, config, timeout=duration + 60)
    out: dict[str, Figure] = {f"hot_{name}_{k[len('hot_us_'):]}_us": v for k, v in feed.items()
                              if k.startswith("hot_us_") and k != "hot_us_n"}
    out[f"hot_{name}_ticks"] = feed.get("hot_us_n")
    out[f"hot_{name}_spooled_chunks"] = feed.get("spooled")
    out[f"hot_{name}_lost_chunks"] = feed.get("lost")
    return out


def with_ratios(report: dict[str, Figure]) -> dict[str, Figure]:
    """``hot_<cond>_p99_vs_healthy`` for each outage condition present."""
    base = report.get("hot_healthy_p99_us")
    return {f"hot_{c}_p99_vs_healthy": ratio(report.get(f"hot_{c}_p99_us"), base)
            for c in ("db_down", "broker_refused", "broker_hung") if f"hot_{c}_p99_us" in report}


def parse_cost(n: int = 20_000) -> dict[str, Figure]:
    """µs per Binance trade frame parsed (JSON decode + validation -> Tick), this process."""
    from ..feed.binance import parse_frame

    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        parse_frame(_FRAME, 0)
        samples.append(time.perf_counter_ns() - t0)
    s = summary("parse_us", samples[n // 10:], scale=1e-3)
    return {k: v for k, v in s.items() if k in ("parse_us_p50", "parse_us_p99")}
