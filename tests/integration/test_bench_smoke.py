"""``ttquant bench --quick`` at test size: the report has every figure, flat and finite.

No timing assertions (the machine is shared and noisy): only the report's shape, and the
counted correctness figures of the outage phase (rows lost / duplicated are counts, not times).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REQUIRED = (
    "copy1_ticks_s", "copy2_ticks_s", "rowbyrow_ticks_s", "e2e_ticks_s", "e2e_vs_copy2", "e2e_vs_rowbyrow",
    "hot_healthy_p50_us", "hot_healthy_p99_us", "hot_healthy_max_us", "hot_db_down_p99_us",
    "hot_broker_refused_p99_us", "hot_broker_hung_p99_us", "hot_broker_hung_p99_vs_healthy",
    "hot_floor_p99_us", "hot_floor_nosub_p99_us", "hot_floor_noop_p99_us", "hot_p99_vs_floor",
    "hot_healthy_floor_p99_us", "hot_healthy_pbfloor_p99_us", "hot_p99_vs_pbfloor", "hot_healthy_cold_share",
    "hot_healthy_floor_cold_share", "hot_db_down_floor_p99_us", "hot_db_down_p99_vs_healthy_floor_adj",
    "order_commit_p50_ms", "order_commit_p99_ms", "order_trade_p99_ms", "tick_visible_p50_ms",
    "tick_visible_p99_ms", "query_latest_ticks_ms", "query_klines_day_ms", "query_latest_positions_ms",
    "query_strategy_stats_ms", "cpu_us_per_tick", "outage_lost_rows", "outage_duplicate_rows",
    "machine_cpu_count", "machine_cpu_model", "machine_python", "postgres_version", "broker",
    "target_e2e_vs_copy2", "target_outage_lost_rows",
    # The conditions' rounds, what else each cost, and how long their rows took to be stored.
    "hot_healthy_rounds", "hot_db_down_p99_rounds", "hot_broker_hung_machine_busy_cores",
    "hot_db_down_feed_bg_cpu_s", "hot_healthy_settle_s", "hot_db_down_settle_s",
)
# Present in every report, None when the server is not a local process (container, other host).
PRESENT = ("pg_cpu_us_per_tick", "pg_aux_cpu_us_per_tick", "redis_cpu_us_per_tick", "server_cpu_us_per_tick",
           "cpu_with_servers_us_per_tick", "e2e_cpu_ceiling_ticks_s", "cpu_ceiling_vs_copy2",
           "cpu_ceiling_vs_rowbyrow", "e2e_vs_cpu_ceiling", "server_cpu_note")


def test_bench_quick_report_shape(pg_admin_uri: str, redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "DB_URI": pg_admin_uri, "CELERY_BROKER_URL": redis_url,
           "TTQUANT_HOME": str(tmp_path / "home")}
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", "bench", "--quick", "--scale", "0.01",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = sorted(out.glob("*.json"))
    assert len(reports) == 1 and len(sorted(out.glob("*.md"))) == 1
    report = json.loads(reports[0].read_text())
    assert not [k for k in report if k.startswith("error_")], report
    missing = [k for k in REQUIRED + PRESENT if k not in report]
    assert not missing, missing
    for key, value in report.items():
        assert value is None or isinstance(value, str | bool | int | float), key
        if isinstance(value, float):
            assert math.isfinite(value), key
    for key in REQUIRED:  # every required figure was really measured
        assert report[key] is not None, key
    assert report["outage_lost_rows"] == 0 and report["outage_duplicate_rows"] == 0
    assert report["e2e_stored"] == report["e2e_ticks"] > 0
    assert report["hot_floor_received"] > 0  # the floor's subscriber was really connected
    # The interleaved floor took turns with the feed: both were timed, on ticks of the same run.
    assert report["hot_healthy_floor_ticks"] > 0 and report["hot_healthy_pbfloor_ticks"] > 0
    assert report["hot_healthy_ticks"] > 0
    assert "`hot_floor_p99_us`" in done.stdout  # shown under the hot-path target
    assert "| target |" in done.stdout
