"""``ttquant up``: the whole local stack as child processes, with a live line.

Starts (or finds) the services, applies the schema, spawns two Celery workers -- one for the
``ticks`` queue, one for ``orders`` and ``maintenance``, so a tick backlog never delays an order
write -- the gateway and the feed, prints once a second what was published / enqueued / spooled /
persisted and the queue depths, and on Ctrl-C, SIGTERM or ``--duration`` stops the feed first,
lets the worker drain what was enqueued, stops the worker and prints the totals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .feed.stats import read_stats
from .settings import Settings, mask_url

DRAIN_TIMEOUT_S = 60.0


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class _Figures:
    """Reads the figures of the live line: feed stats file, database rows, queue depths."""

    def __init__(self, settings: Settings, exchange: str, since_ns: int) -> None:
        from .storage.engine import get_engine
        from .tasks.app import make_app

        self.settings = settings
        self.exchange = exchange
        self.since_ns = since_ns
        self.engine = get_engine(settings.db_uri)
        self.app = make_app(settings)
        self.stats_path = settings.home / "run" / "feed.json"

    def persisted(self) -> int | None:
        from .storage.queries import count_ticks_since

        try:
            return count_ticks_since(self.engine, self.exchange, self.since_ns)
        except Exception:
            return None

    def depths(self) -> dict[str, int | None]:
        from .tasks.parking import queue_depths

        try:
            return queue_depths(self.app, ("ticks", "orders", "maintenance", "parked"))
        except Exception:
            return {}

    def feed(self) -> dict[str, Any]:
        """The feed's stats file, if it was written by this run's feed."""
        data = read_stats(self.stats_path) or {}
        return data if float(data.get("time", 0)) * 1e9 >= self.since_ns else {}


def _line(feed: dict[str, Any], persisted: int | None, prev: tuple[float, int | None],
          depths: dict[str, int | None]) -> str:
    """One status line: feed figures (ticks, chunks), rows persisted and their rate, queue depths."""
    now = time.monotonic()
    rate = "?"
    if persisted is not None and prev[1] is not None and now > prev[0]:
        rate = f"{(persisted - prev[1]) / (now - prev[0]):.0f}"
    counts = feed.get("counts", {})
    rates = feed.get("rates_per_s", {})
    return (f"published {counts.get('ticks', 0)} ticks ({rates.get('ticks', 0):.0f}/s)"
            f" | enqueued {counts.get('published', 0)} chunks ({rates.get('published', 0):.0f}/s)"
            f" | spooled {counts.get('spool_chunks', 0)} chunks"
            f" | persisted {persisted if persisted is not None else '?'} ({rate}/s)"
            f" | queue ticks={depths.get('ticks')} parked={depths.get('parked')}")


def run_up(settings: Settings, *, source: str, rate: float, exchange: str | None, duration: float | None,
           concurrency: int, gateway: bool = True) -> int:
    """Run the local stack until Ctrl-C / SIGTERM / ``duration``; returns the exit status."""
    from .services import resolve
    from .storage.migrate import init_db

    settings = resolve(settings, start=True)
    exchange = exchange or ("sim" if source == "sim" else settings.exchange)
    print(f"ttquant up: database {mask_url(settings.db_uri)}, broker {mask_url(settings.broker_url)}", flush=True)
    init_db(settings.db_uri)
    env = dict(os.environ, DB_URI=settings.db_uri or "", CELERY_BROKER_URL=settings.broker_url or "",
               TTQUANT_HOME=str(settings.home), TTQUANT_SYMBOLS=",".join(settings.symbols))
    logs = settings.home / "logs"
    since_ns = time.time_ns()
    def celery_worker(queues: str, processes: int, name: str) -> subprocess.Popen[bytes]:
        return _spawn([sys.executable, "-m", "celery", "-A", "ttquant_tasks", "worker", "-Q", queues,
                       "-c", str(processes), "-O", "fair", "--loglevel", "WARNING",
                       "-n", f"ttquant-up-{name}-{os.getpid()}@%h"], env, logs / f"worker-{name}.log")

    worker = celery_worker("ticks", concurrency, "ticks")
    orders_worker = celery_worker("orders,maintenance", 1, "orders")
    feed_argv = [sys.executable, "-m", "ttquant_tasks.cli", "feed", "--source", source]
    if source == "sim":
        feed_argv += ["--exchange", exchange, "--rate", str(rate) if rate > 0 else "max"]
    feed = _spawn(feed_argv, env, logs / "feed.log")
    children = {"worker-ticks": worker, "worker-orders": orders_worker, "feed": feed}
    if gateway:
        children["gateway"] = _spawn([sys.executable, "-m", "ttquant_tasks.cli", "gateway"], env,
                                     logs / "gateway.log")
    pids = ", ".join(f"{name} pid {proc.pid}" for name, proc in children.items())
    print(f"ttquant up: {pids}; logs in {logs}; Ctrl-C stops", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    figures = _Figures(settings, exchange, since_ns)
    deadline = time.monotonic() + duration if duration else None
    prev: tuple[float, int | None] = (time.monotonic(), figures.persisted())
    status = 0
    while not stop.wait(1.0):
        persisted = figures.persisted()
        print(_line(figures.feed(), persisted, prev, figures.depths()), flush=True)
        prev = (time.monotonic(), persisted)
        for name, proc in children.items():
            if proc.poll() is not None:
                print(f"ttquant up: {name} exited with {proc.returncode}; see {logs / (name + '.log')}",
                      file=sys.stderr, flush=True)
                status = 1
                stop.set()
        if deadline is not None and time.monotonic() >= deadline:
            break

    print("ttquant up: stopping feed and gateway (they flush what they hold)...", flush=True)
    if "gateway" in children:
        _stop(children["gateway"], timeout=30)
    _stop(feed, timeout=30)
    counts = figures.feed().get("counts", {})
    print("ttquant up: waiting for the workers to drain the queues...", flush=True)
    drain_end = time.monotonic() + DRAIN_TIMEOUT_S
    expected = int(counts.get("ticks", 0)) - int(counts.get("spool_ticks", 0)) - int(counts.get("lost", 0))
    persisted = figures.persisted() or 0
    while worker.poll() is None and time.monotonic() < drain_end:
        depths = figures.depths()
        persisted = figures.persisted() or 0
        if depths.get("ticks") == 0 and depths.get("orders") == 0 and persisted >= expected:
            break
        time.sleep(0.5)
    _stop(worker, timeout=20)
    _stop(orders_worker, timeout=20)
    totals = {"published_ticks": counts.get("ticks", 0), "enqueued_chunks": counts.get("published", 0),
              "spooled_chunks": counts.get("spool_chunks", 0), "lost_chunks": counts.get("lost", 0),
              "persisted_ticks": persisted, "queues": figures.depths()}
    print("ttquant up: totals " + json.dumps(totals), flush=True)
    return status
