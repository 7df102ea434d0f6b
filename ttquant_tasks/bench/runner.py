"""One bench run: private services, every measurement in order, one flat report on disk.

Order matters for fairness and isolation: baselines first (idle machine), then the end-to-end and
order-flow phases with the workers on the direct database, then the phases that need the workers
behind a :class:`.gate.Gate` (outage, then the hot path's conditions in interleaved rounds, one of
them with the database down), then queries on their own database.  A phase that fails records
``error_<phase>`` and the run goes on (so one broken piece does not hide the others); every
process and database of the run is cleaned up at the end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from ..settings import Settings, default_tick_concurrency, mask_url
from ..storage.migrate import init_db
from . import baseline, hotpath, machine, orderflow, outage, pipeline, procs, queries
from .env import Databases, private_broker
from .gate import Gate, closed_port
from .report import Figure, check_flat, markdown, ratio, verdicts
from .scale import Sizes

log = logging.getLogger(__name__)
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]

SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("1-3 throughput (ticks/s)", ("copy1_ticks_s", "copy2_ticks_s", "rowbyrow_ticks_s", "e2e_ticks_s",
                                  "e2e_feed_ticks_s", "e2e_ticks", "e2e_stored", "e2e_vs_copy1", "e2e_vs_copy2",
                                  "e2e_vs_rowbyrow", "e2e_cpu_ceiling_ticks_s", "cpu_ceiling_vs_copy2",
                                  "cpu_ceiling_vs_rowbyrow", "e2e_vs_cpu_ceiling", "copy_ticks", "rowbyrow_ticks")),
    ("4 feed hot path (µs per tick)", tuple(f"hot_{c}_{q}" for c in ("healthy", "db_down", "broker_refused",
                                                                      "broker_hung")
                                            for q in ("p50_us", "p99_us", "max_us", "ticks", "cold_share",
                                                      "cold_p50_us", "cold_p99_us", "floor_p50_us", "floor_p99_us",
                                                      "floor_max_us", "floor_ticks", "floor_cold_p50_us",
                                                      "floor_cold_p99_us", "pbfloor_p50_us", "pbfloor_p99_us",
                                                      "pbfloor_max_us", "pbfloor_ticks", "pbfloor_cold_p50_us",
                                                      "pbfloor_cold_p99_us", "spooled_chunks", "lost_chunks",
                                                      "machine_busy_cores", "machine_steal_cores", "feed_main_cpu_s",
                                                      "feed_bg_cpu_s", "sent", "settle_s", "rounds", "p99_rounds",
                                                      "p99_vs_healthy", "p99_vs_healthy_floor_adj",
                                                      "pbfloor_p99_vs_healthy"))
     + ("hot_floor_p50_us", "hot_floor_p99_us", "hot_floor_max_us", "hot_floor_received",
        "hot_floor_nosub_p50_us", "hot_floor_nosub_p99_us", "hot_floor_noop_p50_us", "hot_floor_noop_p99_us",
        "hot_p99_vs_floor", "hot_p99_vs_pbfloor", "parse_us_p50", "parse_us_p99")),
    ("5-6 orders and tick visibility (ms)", ("flow_rate_set", "flow_ticks_s", "orders_sent", "orders_committed",
                                             "orders_traded", "orders_filled", "orders_rejected",
                                             "order_commit_p50_ms", "order_commit_p99_ms", "order_floor_p50_ms",
                                             "order_floor_p99_ms", "order_floor_n", "order_commit_p99_vs_floor",
                                             "order_trade_p50_ms",
                                             "order_trade_p99_ms", "tick_visible_p50_ms", "tick_visible_p99_ms",
                                             "tick_visible_n")),
    ("7 queries (median ms)", ("query_ticks", "query_generate_s", *queries.QUERIES)),
    ("8 CPU (µs per persisted tick)", ("cpu_us_per_tick", "feed_cpu_us_per_tick", "worker_cpu_us_per_tick",
                                        "pg_cpu_us_per_tick", "pg_aux_cpu_us_per_tick", "redis_cpu_us_per_tick",
                                        "server_cpu_us_per_tick", "cpu_with_servers_us_per_tick", "server_cpu_note")),
    ("9 database outage", ("outage_rate_set", "outage_down_s", "outage_tick_workers", "outage_feed_ticks",
                           "outage_feed_spooled_chunks",
                           "outage_drain_s", "outage_drain_with_flush_s", "outage_flushed_chunks",
                           "outage_parked_left", "outage_stored_rows", "outage_lost_rows", "outage_duplicate_rows")),
)


def _phase(report: dict[str, Figure], name: str, fn: Callable[[], dict[str, Figure]]) -> None:
    log.warning("bench: %s ...", name)
    try:
        report.update(fn())
    except Exception as exc:  # recorded in the report; the remaining phases still run
        log.exception("bench: phase %s failed", name)
        report[f"error_{name}"] = f"{type(exc).__name__}: {exc}"[:300]


def run_bench(settings: Settings, *, quick: bool, scale: float, out_dir: Path,
              profile_dir: Path | None = None) -> tuple[dict[str, Figure], Path, Path]:
    """Run every measurement; returns (report, json path, markdown path).

    ``settings`` must have ``db_uri`` and ``broker_url`` resolved (configured or embedded).
    """
    assert settings.db_uri and settings.broker_url, "resolve the services first"
    sizes = Sizes.of(quick, scale)
    started = datetime.now(UTC)
    report: dict[str, Figure] = {"run_kind": "quick" if quick else "full", "run_scale": scale,
                                 "run_started_utc": started.isoformat(timespec="seconds"), **machine.info()}
    run_dir = Path(tempfile.mkdtemp(prefix="ttq-bench-"))
    logs = run_dir / "logs"
    dbs = Databases(settings.db_uri)
    report["postgres_version"] = dbs.server_version()
    running: list[procs.Proc] = []
    gate: Gate | None = None
    try:
        with private_broker(settings.broker_url) as broker:
            report["broker"] = f"{urlsplit(broker).scheme} {mask_url(broker)}"
            main_db = dbs.create("main")
            report["schema_flavour"] = _init(main_db)
            direct = dataclasses.replace(settings, db_uri=main_db, broker_url=broker)

            def env(phase: str, db: str = main_db, broker_url: str = broker) -> dict[str, str]:
                return {"DB_URI": db, "CELERY_BROKER_URL": broker_url, "TTQUANT_HOME": str(run_dir / phase),
                        "TTQUANT_LOG_LEVEL": "WARNING", "ZMQ_PUB_ENDPOINT": f"tcp://127.0.0.1:{closed_port()}"}

            _phase(report, "baseline", lambda: baseline.measure(main_db, sizes.copy_ticks, sizes.rowbyrow_ticks))
            worker = procs.worker(env("worker"), logs).start()
            running.append(worker)
            orders_worker = procs.worker(env("oworker"), logs, concurrency=1, queues="orders").start()
            running.append(orders_worker)
            _phase(report, "pipeline", lambda: pipeline.measure(main_db, env("e2e"), logs, worker, sizes.e2e_duration,
                                                                SYMBOLS))
            if profile_dir is not None:  # a separate, unmeasured run: the profiler slows the feed down
                profile_dir.mkdir(parents=True, exist_ok=True)
                _phase(report, "profile", lambda: {"profile_feed_ticks": procs.run_feed_child(
                    env("prof"), logs, {"exchange": "bench-prof", "symbols": SYMBOLS, "rate": 0,
                                        "duration": sizes.e2e_duration,
                                        "profile": str(profile_dir / "feed.pstats")},
                    timeout=sizes.e2e_duration + 60)["ticks"]})
            _phase(report, "flow", lambda: orderflow.measure(main_db, env("flow"), logs, sizes.flow_rate,
                                                             sizes.flow_duration, sizes.order_rate))
            # Right after it, same load and workers: the Celery + PostgreSQL floor under figure 5.
            _phase(report, "flow_floor", lambda: orderflow.measure_floor(main_db, env("flowf"), logs, sizes.flow_rate,
                                                                         sizes.flow_duration, sizes.order_rate))
            worker.stop()
            running.remove(worker)
            orders_worker.stop()
            running.remove(orders_worker)
            host = urlsplit(main_db)
            gate = Gate(host.hostname or "127.0.0.1", host.port or 5432)
            gated = main_db.replace(f"{host.hostname}:{host.port}" if host.port else str(host.hostname),
                                    f"127.0.0.1:{gate.port}", 1)
            # The workers as ``ttquant up`` runs them (ticks, its default children; orders; maintenance,
            # where the flush of parked chunks runs), all reaching the database through the gate.
            tick_workers = default_tick_concurrency()
            gated_workers = [procs.worker(env("gworker", db=gated), logs, concurrency=tick_workers).start()]
            running.extend(gated_workers)
            for queue in ("orders", "maintenance"):
                one = procs.worker(env(f"g{queue}", db=gated), logs, concurrency=1, queues=queue).start()
                gated_workers.append(one)
                running.append(one)
            _phase(report, "outage", lambda: outage.measure(
                main_db, env("outage"), logs, gate, direct, sizes.outage_rate, sizes.outage_pre,
                sizes.outage_down, sizes.outage_post, SYMBOLS, max_wait=sizes.outage_down + 120,
                tick_workers=tick_workers))
            hot = (sizes.hot_rate, sizes.hot_duration, SYMBOLS)
            _phase(report, "hot", lambda: hotpath.run_rounds(main_db, lambda phase, url: env(phase, broker_url=url),
                                                             logs, gate, broker, *hot, rounds=sizes.hot_rounds))
            # Right after it, same rate and pacing, the workers idle.
            _phase(report, "hot_floor", lambda: hotpath.run_floor(env("hotf"), logs, *hot))
            for p in gated_workers:
                p.stop()
                running.remove(p)
            _phase(report, "parse", hotpath.parse_cost)
            qdb = dbs.create("query")
            _init(qdb)
            _phase(report, "queries", lambda: queries.measure(qdb, sizes.query_ticks))
    finally:
        for p in running:
            p.stop()
        if gate is not None:
            gate.close()
        try:
            dbs.drop_all()
        except Exception:
            log.exception("bench: dropping the bench databases failed")
        keep = profile_dir is not None
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    report.update(hotpath.with_ratios(report))
    report["e2e_vs_copy1"] = ratio(report.get("e2e_ticks_s"), report.get("copy1_ticks_s"))
    report["e2e_vs_copy2"] = ratio(report.get("e2e_ticks_s"), report.get("copy2_ticks_s"))
    report["e2e_vs_rowbyrow"] = ratio(report.get("e2e_ticks_s"), report.get("rowbyrow_ticks_s"))
    report["order_commit_p99_vs_floor"] = ratio(report.get("order_commit_p99_ms"), report.get("order_floor_p99_ms"))
    report.update(cpu_ceiling(report))
    report["run_seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    report.update(verdicts(report))
    problems = check_flat(report)
    if problems:
        raise ValueError(f"bench report is malformed: {problems}")
    return report, *_write(report, out_dir, started)


def cpu_ceiling(report: dict[str, Figure]) -> dict[str, Figure]:
    """The most ticks/s the whole pipeline could store if it had every core to itself: cores x 1e6 /
    CPU µs per persisted tick of feed, worker, PostgreSQL and Redis (measured in the end-to-end
    phase), and what that allows of the end-to-end ratios.  None when a figure is missing."""
    cores, per_tick = report.get("machine_cpu_count"), report.get("cpu_with_servers_us_per_tick")
    ceiling = None
    if isinstance(cores, int) and cores > 0 and isinstance(per_tick, int | float) and per_tick > 0:
        ceiling = round(cores * 1e6 / per_tick)
    return {"e2e_cpu_ceiling_ticks_s": ceiling,
            "cpu_ceiling_vs_copy2": ratio(ceiling, report.get("copy2_ticks_s")),
            "cpu_ceiling_vs_rowbyrow": ratio(ceiling, report.get("rowbyrow_ticks_s")),
            "e2e_vs_cpu_ceiling": ratio(report.get("e2e_ticks_s"), ceiling)}


def _init(uri: str) -> str:
    init_db(uri)
    import psycopg2

    with psycopg2.connect(uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT value FROM ttquant_meta WHERE key = 'flavour'")
        row = cur.fetchone()
    return str(row[0]) if row else "?"


def _write(report: dict[str, Figure], out_dir: Path, started: datetime) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y%m%dT%H%M%SZ")
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    extra = (("run and machine", tuple(k for k in report if k.startswith(("run_", "machine_")))
                                    + ("postgres_version", "schema_flavour", "broker")),
             ("errors", tuple(k for k in report if k.startswith("error_"))))
    md_path.write_text(f"# ttquant bench, {report['run_kind']} run {stem}\n\n" + markdown(report, SECTIONS + extra))
    return json_path, md_path
