"""Shared helpers of the pipeline and fault tests: make ticks, run the feed, count what landed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2

from tests.support.waiting import wait_for
from ttquant_tasks.models import Tick
from ttquant_tasks.storage.engine import get_engine
from ttquant_tasks.storage.queries import duplicate_ticks, tick_ids


def make_ticks(exchange: str, symbol: str, first_id: int, n: int, t0_ns: int | None = None) -> list[Tick]:
    """``n`` ticks with consecutive ids from ``first_id``, exact decimal strings, 1 µs apart."""
    t0 = t0_ns or time.time_ns()
    return [
        Tick(exchange, symbol, first_id + i, f"{64000 + i % 50}.{i % 100:02d}", f"0.{i + 1:08d}",
             t0 + i * 1000, t0 + i * 1000 + 500, i % 2 == 0)
        for i in range(n)
    ]


def unique_exchange(prefix: str) -> str:
    """An exchange name no other test of this database uses (rows are counted per exchange)."""
    return f"{prefix}{time.time_ns() % 10**9}"


def stored_ids(db_uri: str, exchange: str, symbol: str) -> list[int]:
    return tick_ids(get_engine(db_uri), exchange, symbol)


def blocked_count(db_uri: str) -> int:
    """Sessions waiting on a lock for market_data (a killed worker's session lingers until the lock goes)."""
    conn = psycopg2.connect(db_uri)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query ILIKE '%market_data%'")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


@contextmanager
def market_data_locked(db_uri: str) -> Iterator[None]:
    """Hold an exclusive lock on market_data so a worker's write blocks mid-chunk (to kill it there)."""
    locker = psycopg2.connect(db_uri)
    try:
        locker.cursor().execute("LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        locker.rollback()
        locker.close()


def feed_process(env: dict[str, str], exchange: str, rate: int, duration: float) -> subprocess.Popen[str]:
    """``ttquant feed --source sim`` as a subprocess with ``env`` on top of ours."""
    return subprocess.Popen([sys.executable, "-m", "ttquant_tasks.cli", "feed", "--source", "sim", "--rate", str(rate),
                             "--duration", str(duration), "--exchange", exchange], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def feed_counts(env: dict[str, str]) -> dict[str, Any]:
    """The final counters the feed wrote to ``$TTQUANT_HOME/run/feed.json``."""
    counts: dict[str, Any] = json.loads((Path(env["TTQUANT_HOME"]) / "run" / "feed.json").read_text())["counts"]
    return counts


def assert_all_once(db_uri: str, exchange: str, symbols: tuple[str, ...], expected: int, timeout: float = 120) -> None:
    """Exactly ``expected`` rows of ``exchange`` land; ids consecutive from 1 per symbol; no duplicates."""
    engine = get_engine(db_uri)

    def total() -> int:
        return sum(len(tick_ids(engine, exchange, s)) for s in symbols)

    try:
        wait_for(lambda: total() >= expected, timeout=timeout, what=f"{expected} rows")
    except AssertionError:
        detail = {s: (len(ids), ids[-1] if ids else None) for s in symbols for ids in [tick_ids(engine, exchange, s)]}
        raise AssertionError(f"{total()} of {expected} rows stored after {timeout}s; "
                             f"(rows, last id) per symbol: {detail}") from None
    time.sleep(1)  # let a straggling duplicate land before counting
    assert total() == expected
    for sym in symbols:
        ids = tick_ids(engine, exchange, sym)
        assert ids == list(range(1, len(ids) + 1)), f"{sym}: ids not consecutive"
    assert duplicate_ticks(engine) == 0
    assert_audit_clean(db_uri, exchange, symbols)


def assert_audit_clean(db_uri: str, exchange: str, symbols: tuple[str, ...]) -> None:
    """``ttquant audit`` as an operator runs it: exit 0 (every id once, no gap) for ``symbols``."""
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 86_400))
    until = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3_600))
    argv = [sys.executable, "-m", "ttquant_tasks.cli", "audit", "--exchange", exchange, "--since", since,
            "--until", until, "--json"]
    for sym in symbols:
        argv += ["--symbol", sym]
    out = subprocess.run(argv, env={**os.environ, "DB_URI": db_uri}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"ttquant audit exit {out.returncode}: {out.stdout[-2000:]} {out.stderr[-2000:]}"
