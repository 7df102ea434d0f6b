"""End-to-end throughput against chunk size (issue 7: "a plot of throughput against chunk size").

Usage: ``python -m ttquant_tasks.bench.sweep [--sizes 100,250,500,1000] [--duration 10] [--repeat 2]``
(services as ``ttquant bench``: ``DB_URI`` / ``CELERY_BROKER_URL`` or the embedded ones).  Same
setup as measurement 3 (sim feed at max rate -> ZMQ -> Celery, ticks worker with 2 children ->
PostgreSQL), one fresh database and private broker, and only ``TTQUANT_CHUNK_SIZE`` changing
between runs.  Sizes are interleaved over the repeats (100, 250, ..., 100, 250, ...) so a burst of
load from elsewhere on the machine does not land on one size only.  Prints a markdown table
(persisted ticks/s per run, median, and CPU µs per tick) and writes ``chunk_sweep.json`` and,
when matplotlib is installed, ``chunk_sweep.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from ..commands import args as cli_args
from ..settings import Settings
from . import pipeline, procs
from .env import Databases, private_broker
from .gate import closed_port
from .runner import SYMBOLS, _init

log = logging.getLogger(__name__)


def sweep(settings: Settings, sizes: list[int], duration: float, repeat: int) -> list[dict[str, Any]]:
    """One end-to-end run per (repeat, size); returns one row of figures per run."""
    assert settings.db_uri and settings.broker_url, "resolve the services first"
    run_dir = Path(tempfile.mkdtemp(prefix="ttq-sweep-"))
    dbs = Databases(settings.db_uri)
    rows: list[dict[str, Any]] = []
    try:
        with private_broker(settings.broker_url) as broker:
            db = dbs.create("sweep")
            _init(db)

            def env(phase: str) -> dict[str, str]:
                return {"DB_URI": db, "CELERY_BROKER_URL": broker, "TTQUANT_HOME": str(run_dir / phase),
                        "TTQUANT_LOG_LEVEL": "WARNING", "ZMQ_PUB_ENDPOINT": f"tcp://127.0.0.1:{closed_port()}"}

            worker = procs.worker(env("worker"), run_dir / "logs").start()
            try:
                for r in range(repeat):
                    for size in sizes:
                        e = {**env(f"e2e-{r}-{size}"), "TTQUANT_CHUNK_SIZE": str(size)}
                        # pipeline.measure counts rows of its exchange: one fresh exchange per run.
                        fig = pipeline.measure(db, e, run_dir / "logs", worker, duration, SYMBOLS,
                                               exchange=f"bench-sweep-{r}-{size}")
                        rows.append({"chunk_size": size, "repeat": r, **fig})
                        log.warning("sweep: size %d run %d: %s ticks/s", size, r, fig.get("e2e_ticks_s"))
            finally:
                worker.stop()
    finally:
        dbs.drop_all()
        shutil.rmtree(run_dir, ignore_errors=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per chunk size, persisted ticks/s of each run, their median, feed ticks/s, CPU/tick."""
    sizes = sorted({r["chunk_size"] for r in rows})
    lines = ["| chunk size | persisted ticks/s (each run) | median | feed ticks/s (median) | CPU µs/tick (median) |",
             "|---|---|---|---|---|"]
    for s in sizes:
        mine = [r for r in rows if r["chunk_size"] == s]
        runs = [int(r["e2e_ticks_s"] or 0) for r in mine]
        feed = statistics.median(int(r["e2e_feed_ticks_s"]) for r in mine)
        cpu = statistics.median(float(r["cpu_us_per_tick"]) for r in mine)
        lines.append(f"| {s} | {', '.join(f'{v:,}' for v in runs)} | {statistics.median(runs):,.0f} | "
                     f"{feed:,.0f} | {cpu:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Throughput against chunk size as a PNG; False (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["chunk_size"] for r in rows], [r["e2e_ticks_s"] for r in rows], label="runs")
    sizes = sorted({r["chunk_size"] for r in rows})
    med = [statistics.median(r["e2e_ticks_s"] for r in rows if r["chunk_size"] == s) for s in sizes]
    ax.plot(sizes, med, marker="o", label="median")
    ax.set_xlabel("chunk size (ticks)")
    ax.set_ylabel("persisted ticks/s")
    ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ttquant_tasks.bench.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,250,500,1000", help="comma-separated chunk sizes")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of feed per run")
    p.add_argument("--repeat", type=int, default=2, help="runs per size (interleaved)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for the JSON (and PNG)")
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",") if x.strip()]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rows = sweep(cli_args.resolved(Settings.from_env()), sizes, a.duration, a.repeat)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "chunk_sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows), end="")
    if plot(rows, a.out / "chunk_sweep.png"):
        print(f"plot: {a.out / 'chunk_sweep.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
