"""``ttquant up``: the whole local stack as child processes, with a live line.

Starts (or finds) the services, applies the schema, spawns three Celery workers -- one each for
the ``ticks``, ``orders`` and ``maintenance`` queues, so neither a tick backlog nor a long job
delays an order write -- the gateway and the feed, prints once a second what was published / enqueued / spooled /
persisted and the queue depths, and on Ctrl-C, SIGTERM or ``--duration`` stops the feed first,
lets the worker drain what was enqueued, stops the worker and prints the totals.

``--flower`` adds Flower as one more child (``celery flower --max_tasks=10000``, the
workers then run with task events, ``-E``).  Its broker URL and its basic auth (``FLOWER_BASIC_AUTH``,
``user:password``) are handed to Flower through its environment, so neither is on a command line;
bound beyond loopback the auth is required (:func:`flower_options` refuses), on loopback it is
recommended (a warning).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .feed.stats import read_stats
from .settings import Settings, mask_url

DRAIN_TIMEOUT_S = 60.0
FLOWER_MAX_TASKS = 10_000
"""Tasks Flower keeps in memory (its default of 100,000 grows without bound in practice, flower#1305)."""


@dataclasses.dataclass(frozen=True)
class FlowerOptions:
    """Where Flower listens and its credentials (``user:password[,user2:password2]``, or None)."""

    address: str
    port: int
    basic_auth: str | None

    def __repr__(self) -> str:  # never print the password
        auth = "set" if self.basic_auth else None
        return f"FlowerOptions(address={self.address!r}, port={self.port}, basic_auth={auth})"


def is_loopback(address: str) -> bool:
    """True for ``localhost`` and loopback IPs (127.0.0.0/8, ::1); False for any other name or
    for ``""`` / ``0.0.0.0`` / ``::`` (all interfaces)."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def flower_options(address: str, port: int, basic_auth: str | None) -> tuple[FlowerOptions, str | None]:
    """Check Flower's settings; returns them and a warning to print (or None).

    ``basic_auth`` is the value of ``FLOWER_BASIC_AUTH``: comma-separated ``user:password`` pairs,
    each with a non-empty user and password.  Raises :class:`ConfigError` naming
    ``FLOWER_BASIC_AUTH`` when it is malformed, or unset while ``address`` is not a loopback address
    (anyone who can reach the port could then read task arguments and revoke tasks), and naming
    ``--flower-port`` for a port outside 1..65535.  Messages never contain the password.
    """
    if not 0 < port < 65536:
        raise ConfigError("--flower-port", f"must be a TCP port 1..65535, got {port}")
    auth = basic_auth or None
    if auth is not None:
        for pair in auth.split(","):
            user, sep, password = pair.partition(":")
            if not (sep and user.strip() and password):
                raise ConfigError("FLOWER_BASIC_AUTH", "must be user:password (several separated by commas), "
                                                       "each with a non-empty user and password")
    options = FlowerOptions(address, port, auth)
    if is_loopback(address):
        warning = None if auth else (f"Flower on {address}:{port} without a password: any local user can "
                                     "see and revoke tasks; set FLOWER_BASIC_AUTH=user:password")
        return options, warning
    if auth is None:
        raise ConfigError("FLOWER_BASIC_AUTH", f"must be set (user:password) to bind Flower to {address!r}, "
                                               "which is not a loopback address")
    return options, None


def flower_argv(options: FlowerOptions) -> list[str]:
    """Flower's command line: neither ``-A`` (Flower need not import our app) nor ``--broker``, memory
    bounded by ``--max_tasks``.  No secret is in it (any local user can read a command line): the
    broker URL and the credentials go in the child's environment (:func:`flower_env`)."""
    return [sys.executable, "-m", "celery", "flower", f"--address={options.address}", f"--port={options.port}",
            f"--max_tasks={FLOWER_MAX_TASKS}"]


def flower_env(env: dict[str, str], options: FlowerOptions, broker_url: str) -> dict[str, str]:
    """Flower's environment: Celery's default app takes its broker from ``CELERY_BROKER_URL`` and Flower
    reads ``FLOWER_*`` variables, so ``FLOWER_BASIC_AUTH`` is exactly ``options.basic_auth`` (removed
    when None, so an empty variable cannot confuse it)."""
    out = dict(env, CELERY_BROKER_URL=broker_url)
    out.pop("FLOWER_BASIC_AUTH", None)
    if options.basic_auth:
        out["FLOWER_BASIC_AUTH"] = options.basic_auth
    return out


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
        self.stats_path = settings.feed_stats_path

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
           concurrency: int, gateway: bool = True, flower: FlowerOptions | None = None) -> int:
    """Run the local stack until Ctrl-C / SIGTERM / ``duration``; returns the exit status.

    ``flower``: also run Flower (checked by :func:`flower_options`), and the workers with task events."""
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
                       *(["-E"] if flower is not None else []),  # task events: what Flower shows
                       "-n", f"ttquant-up-{name}-{os.getpid()}@%h"], env, logs / f"worker-{name}.log")

    worker = celery_worker("ticks", concurrency, "ticks")
    orders_worker = celery_worker("orders", 1, "orders")
    # Its own worker: a long job (a backup, a flush of many parked chunks) never holds up an order write.
    maintenance_worker = celery_worker("maintenance", 1, "maintenance")
    feed_argv = [sys.executable, "-m", "ttquant_tasks.cli", "feed", "--source", source]
    if source == "sim":
        feed_argv += ["--exchange", exchange, "--rate", str(rate) if rate > 0 else "max"]
    feed = _spawn(feed_argv, env, logs / "feed.log")
    children = {"worker-ticks": worker, "worker-orders": orders_worker, "worker-maintenance": maintenance_worker,
                "feed": feed}
    if gateway:
        children["gateway"] = _spawn([sys.executable, "-m", "ttquant_tasks.cli", "gateway"], env,
                                     logs / "gateway.log")
    if flower is not None:
        assert settings.broker_url is not None  # resolved above
        children["flower"] = _spawn(flower_argv(flower), flower_env(env, flower, settings.broker_url),
                                    logs / "flower.log")
        print(f"ttquant up: Flower on http://{flower.address}:{flower.port}/"
              f" ({'basic auth' if flower.basic_auth else 'no password'})", flush=True)
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
    if "flower" in children:
        _stop(children["flower"], timeout=10)
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
    for celery_proc in (worker, orders_worker, maintenance_worker):
        _stop(celery_proc, timeout=20)
    totals = {"published_ticks": counts.get("ticks", 0), "enqueued_chunks": counts.get("published", 0),
              "spooled_chunks": counts.get("spool_chunks", 0), "lost_chunks": counts.get("lost", 0),
              "persisted_ticks": persisted, "queues": figures.depths()}
    print("ttquant up: totals " + json.dumps(totals), flush=True)
    return status
