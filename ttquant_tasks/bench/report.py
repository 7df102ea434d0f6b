"""Pure report logic: percentiles, targets (pass/fail) and the markdown table.  No I/O.

A report is ONE flat ``dict[str, float | int | str | bool | None]``: ``None`` means "not
measured / not applicable" and never hides a failure (its target shows ``n/a``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Figure = float | int | str | bool | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100, nearest rank) of ``values``; None when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def summary(prefix: str, values: Sequence[float], scale: float = 1.0) -> dict[str, Figure]:
    """``{prefix}_p50``, ``_p99``, ``_max`` and ``_n`` of ``values`` multiplied by ``scale``."""
    out: dict[str, Figure] = {f"{prefix}_n": len(values)}
    for name, q in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
        v = percentile(values, q)
        out[f"{prefix}_{name}"] = None if v is None else round(v * scale, 3)
    return out


def ratio(a: Figure, b: Figure) -> float | None:
    """``a / b`` rounded to 3 places, None unless both are positive numbers."""
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, int | float) or not isinstance(b, int | float):
        return None
    if not b > 0 or not math.isfinite(a) or not math.isfinite(b):
        return None
    return round(a / b, 3)


@dataclass(frozen=True)
class Target:
    """One promise of the issue: ``key`` compared with ``limit`` by ``op`` (``>=``, ``<=``, ``<``, ``==``)."""

    key: str
    op: str
    limit: float
    label: str


TARGETS: tuple[Target, ...] = (
    Target("e2e_vs_copy2", ">=", 0.7, "end to end >= 0.7x raw 2-conn COPY"),
    Target("e2e_vs_rowbyrow", ">=", 6.0, "end to end >= 6x row-by-row"),
    Target("hot_healthy_p99_us", "<=", 20.0, "hot path p99 <= 20 us"),
    Target("hot_db_down_p99_vs_healthy", "<=", 1.2, "hot p99 db down <= 1.2x healthy"),
    Target("hot_broker_refused_p99_vs_healthy", "<=", 1.2, "hot p99 broker refused <= 1.2x healthy"),
    Target("hot_broker_hung_p99_vs_healthy", "<=", 1.2, "hot p99 broker hung <= 1.2x healthy"),
    Target("order_commit_p99_ms", "<", 10.0, "order commit p99 < 10 ms"),
    Target("tick_visible_p99_ms", "<", 1500.0, "tick visible p99 < 1.5 s"),
    Target("query_latest_ticks_ms", "<", 100.0, "latest ticks query < 100 ms"),
    Target("query_klines_day_ms", "<", 100.0, "1 day of 1m klines < 100 ms"),
    Target("query_latest_positions_ms", "<", 100.0, "latest_positions < 100 ms"),
    Target("query_strategy_stats_ms", "<", 100.0, "strategy_stats < 100 ms"),
    Target("cpu_us_per_tick", "<=", 50.0, "CPU <= 50 us per tick"),
    Target("outage_drain_s", "<=", 10.0, "backlog drained <= 10 s"),
    Target("outage_lost_rows", "==", 0.0, "0 rows lost"),
    Target("outage_duplicate_rows", "==", 0.0, "0 rows duplicated"),
)

# Figures shown in the targets table under the target they explain (``after``); never pass/FAIL.
REFERENCES: tuple[tuple[str, str, str], ...] = (
    ("e2e_vs_copy2", "e2e_cpu_ceiling_ticks_s", "CPU ceiling: cores / CPU per tick incl. servers (ticks/s)"),
    ("e2e_vs_copy2", "cpu_ceiling_vs_copy2", "CPU ceiling / raw 2-conn COPY (the most e2e_vs_copy2 can be)"),
    ("e2e_vs_copy2", "e2e_vs_cpu_ceiling", "end to end / CPU ceiling"),
    ("e2e_vs_rowbyrow", "cpu_ceiling_vs_rowbyrow", "CPU ceiling / row-by-row (the most e2e_vs_rowbyrow can be)"),
    ("hot_healthy_p99_us", "hot_healthy_floor_p99_us",
     "floor: bare 2-frame pyzmq send, interleaved with healthy (same process, load, pacing)"),
    ("hot_healthy_p99_us", "hot_healthy_pbfloor_p99_us",
     "floor: protobuf encode of the tick + that send, interleaved likewise"),
    ("hot_healthy_p99_us", "hot_p99_vs_floor", "hot p99 / bare-send floor"),
    ("hot_healthy_p99_us", "hot_p99_vs_pbfloor", "hot p99 / encode + send floor"),
    ("hot_healthy_p99_us", "hot_healthy_cold_share", "share of ticks right after a pacing sleep (cold)"),
    ("hot_healthy_p99_us", "hot_healthy_cold_p50_us", "p50 of those cold ticks"),
    ("hot_healthy_p99_us", "hot_healthy_floor_cold_p50_us", "p50 of the bare-send floor's cold ticks"),
    ("hot_healthy_p99_us", "hot_healthy_pbfloor_cold_p50_us", "p50 of the encode + send floor's cold ticks"),
    ("hot_healthy_p99_us", "hot_floor_nosub_p99_us", "floor alone: bare send in an idle process, no subscriber"),
    ("hot_healthy_p99_us", "hot_floor_p99_us", "floor alone: bare send, 1 subscriber"),
    ("hot_healthy_p99_us", "hot_floor_noop_p99_us", "floor alone: timing only"),
    ("hot_healthy_p99_us", "hot_healthy_machine_busy_cores", "machine's busy cores during healthy (every process)"),
    *((f"hot_{c}_p99_vs_healthy", ref, label) for c in ("db_down", "broker_refused", "broker_hung")
      for ref, label in ((f"hot_{c}_p99_vs_healthy_floor_adj", "the same, each p99 over its own floor"),
                         (f"hot_{c}_pbfloor_p99_vs_healthy",
                          "control: the same ratio of the encode + send floor, code no outage touches"),
                         (f"hot_{c}_machine_busy_cores", "machine's busy cores during it"))),
    ("order_commit_p99_ms", "order_floor_p99_ms", "floor: a bare Celery task doing one INSERT, same load and worker"),
    ("order_commit_p99_ms", "order_commit_p99_vs_floor", "order commit p99 / floor"),
)

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b, "==": lambda a, b: a == b,
}


def verdict(report: Mapping[str, Any], target: Target) -> str:
    """``pass``, ``FAIL`` or ``n/a`` (figure missing, None or not a number)."""
    value = report.get(target.key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return "pass" if _OPS[target.op](float(value), target.limit) else "FAIL"


def verdicts(report: Mapping[str, Any]) -> dict[str, Figure]:
    """``target_<key>`` -> verdict for every target (flat, to merge into the report)."""
    return {f"target_{t.key}": verdict(report, t) for t in TARGETS}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown(report: Mapping[str, Any], sections: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Targets table (figure, target, verdict) followed by one table per section of keys."""
    lines = ["| target | figure | value | result |", "|---|---|---|---|"]
    for t in TARGETS:
        lines.append(f"| {t.label} | `{t.key}` | {_fmt(report.get(t.key))} | {verdict(report, t)} |")
        lines += [f"| ↳ {label} | `{key}` | {_fmt(report.get(key))} | reference |"
                  for after, key, label in REFERENCES if after == t.key and key in report]
    for title, keys in sections:
        lines += ["", f"**{title}**", "", "| figure | value |", "|---|---|"]
        lines += [f"| `{k}` | {_fmt(report.get(k))} |" for k in keys if k in report]
    return "\n".join(lines) + "\n"


def check_flat(report: Mapping[str, Any]) -> list[str]:
    """Problems with a report's shape: nested values, non-finite numbers (empty list: fine)."""
    problems = []
    for key, value in report.items():
        if value is None or isinstance(value, str | bool):
            continue
        if not isinstance(value, int | float):
            problems.append(f"{key}: {type(value).__name__} is not a flat figure")
        elif not math.isfinite(value):
            problems.append(f"{key}: {value} is not finite")
    return problems
