"""Chunks through a real broker and a real worker into the real database, exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest

from tests.support.stack import client_app
from tests.support.waiting import wait_for
from ttquant_tasks.models import Tick, chunk_payload
from ttquant_tasks.storage.engine import get_engine
from ttquant_tasks.storage.queries import duplicate_ticks, tick_ids

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def make_ticks(exchange: str, symbol: str, first_id: int, n: int, t0_ns: int | None = None) -> list[Tick]:
    t0 = t0_ns or time.time_ns()
    return [
        Tick(exchange, symbol, first_id + i, f"{64000 + i % 50}.{i % 100:02d}", f"0.{i + 1:08d}",
             t0 + i * 1000, t0 + i * 1000 + 500, i % 2 == 0)
        for i in range(n)
    ]


def stored_ids(db_uri: str, exchange: str, symbol: str) -> list[int]:
    return tick_ids(get_engine(db_uri), exchange, symbol)


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_chunk_delivered_twice_lands_once(schema_db: str, broker: str, stack_env: Callable[..., dict[str, str]],
                                          start_worker: Callable[..., Any]) -> None:
    env = stack_env(schema_db, broker)
    start_worker(env)
    app = client_app(env)
    exchange = f"dup{int(time.time() * 1000) % 100000}"
    ticks = make_ticks(exchange, "BTCUSDT", 1, 200)
    payload = chunk_payload(exchange, ticks[:100])
    overlap = chunk_payload(exchange, ticks[50:])  # ids 51..200: 50 already stored (a re-sent chunk), 100 new
    for p in (payload, payload, overlap):
        app.send_task("ttquant.write_ticks", args=[p])
    ids = wait_for(lambda: len(stored_ids(schema_db, exchange, "BTCUSDT")) >= 200 and
                   stored_ids(schema_db, exchange, "BTCUSDT"), what="200 rows")
    time.sleep(1.0)  # let any straggling duplicate land before counting
    ids = stored_ids(schema_db, exchange, "BTCUSDT")
    assert ids == list(range(1, 201)), "every id once, none twice"


def _blocked_count(db_uri: str) -> int:
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


def _blocked_on_lock(db_uri: str) -> bool:
    return _blocked_count(db_uri) > 0


def test_worker_child_killed_mid_chunk_is_redelivered_once(schema_db: str, redis_url: str,
                                                           stack_env: Callable[..., dict[str, str]],
                                                           start_worker: Callable[..., Any]) -> None:
    env = stack_env(schema_db, redis_url)
    worker = start_worker(env)
    app = client_app(env)
    exchange = f"kill{int(time.time() * 1000) % 100000}"
    # Hold a lock so the worker's INSERT blocks mid-chunk, then kill the pool child doing it.
    locker = psycopg2.connect(schema_db)
    cur = locker.cursor()
    cur.execute("LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")
    try:
        app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, make_ticks(exchange, "ETHUSDT", 1, 300))])
        wait_for(lambda: _blocked_on_lock(schema_db), what="worker blocked inside the chunk")
        worker.kill_child()
        time.sleep(1.0)
    finally:
        locker.rollback()
        locker.close()
    ids = wait_for(lambda: stored_ids(schema_db, exchange, "ETHUSDT"), what="redelivered chunk stored")
    time.sleep(1.0)
    ids = stored_ids(schema_db, exchange, "ETHUSDT")
    assert ids == list(range(1, 301))
    assert duplicate_ticks(get_engine(schema_db)) == 0
    assert "WorkerLostError" in worker.log() or "Process" in worker.log()


def test_bad_payload_is_dead_lettered_not_retried(schema_db: str, redis_url: str,
                                                  stack_env: Callable[..., dict[str, str]],
                                                  start_worker: Callable[..., Any]) -> None:
    env = stack_env(schema_db, redis_url)
    start_worker(env)
    app = client_app(env)
    exchange = f"bad{int(time.time() * 1000) % 100000}"
    good = chunk_payload(exchange, make_ticks(exchange, "BTCUSDT", 1, 10))
    bad = dict(good, price=["not-a-number"] * 10, chunk_id="bad-chunk-" + exchange)
    app.send_task("ttquant.write_ticks", args=[bad])
    app.send_task("ttquant.write_ticks", args=[good])
    app.send_task("ttquant.write_ticks", args=[{"what": "ever"}])

    def dead_letters() -> list[Any]:
        conn = psycopg2.connect(schema_db)
        try:
            with conn.cursor() as c:
                c.execute("SELECT reason, payload FROM dead_letters WHERE payload->>'chunk_id' = %s "
                          "OR payload->>'what' = 'ever'", ("bad-chunk-" + exchange,))
                return c.fetchall()
        finally:
            conn.close()

    rows = wait_for(lambda: len(dead_letters()) == 2 and dead_letters(), what="two dead letters")
    reasons = " ".join(r[0] for r in rows)
    assert "price[0]" in reasons and "not a decimal" in reasons
    assert wait_for(lambda: stored_ids(schema_db, exchange, "BTCUSDT")) == list(range(1, 11))


def test_sim_feed_run_persists_exactly_n_consecutive(schema_db: str, broker: str,
                                                     stack_env: Callable[..., dict[str, str]],
                                                     start_worker: Callable[..., Any]) -> None:
    """`ttquant feed --source sim` as a process, a real worker: N published == N rows, ids consecutive."""
    import json
    import subprocess
    import sys

    env = stack_env(schema_db, broker, TTQUANT_SYMBOLS="BTCUSDT,ETHUSDT",
                    ZMQ_PUB_ENDPOINT="tcp://127.0.0.1:0")
    start_worker(env, concurrency=2)
    exchange = f"sim{int(time.time() * 1000) % 100000}"
    import os

    out = subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", "feed", "--source", "sim", "--rate", "2000",
                          "--duration", "3", "--exchange", exchange], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    from pathlib import Path

    stats = json.loads((Path(env["TTQUANT_HOME"]) / "run" / "feed.json").read_text())
    published = stats["counts"]["ticks"]  # ticks received (and sent on ZMQ)
    assert stats["counts"]["lost"] == 0 and stats["counts"]["spool_ticks"] == 0
    assert published > 1000
    engine = get_engine(schema_db)

    def total() -> int:
        return sum(len(tick_ids(engine, exchange, s)) for s in ("BTCUSDT", "ETHUSDT"))

    wait_for(lambda: total() >= published, timeout=90, what=f"{published} rows")
    time.sleep(1.0)
    assert total() == published
    for sym in ("BTCUSDT", "ETHUSDT"):
        ids = tick_ids(engine, exchange, sym)
        assert ids == list(range(1, len(ids) + 1)), f"{sym} ids not consecutive"
    assert duplicate_ticks(engine) == 0



def test_poison_chunk_stops_looping_and_is_parked(schema_db: str, redis_url: str,
                                                  stack_env: Callable[..., dict[str, str]],
                                                  start_worker: Callable[..., Any]) -> None:
    """A chunk whose worker dies every time is parked after TTQUANT_MAX_DELIVERIES redeliveries, not looped."""
    from ttquant_tasks.tasks.parking import flush, queue_depths

    env = stack_env(schema_db, redis_url, TTQUANT_MAX_DELIVERIES="2")
    worker = start_worker(env)
    app = client_app(env)
    exchange = f"poison{int(time.time() * 1000) % 100000}"
    locker = psycopg2.connect(schema_db)
    cur = locker.cursor()
    cur.execute("LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")
    try:
        app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, make_ticks(exchange, "BTCUSDT", 1, 50))])
        for attempt in range(1, 4):  # first delivery + 2 redeliveries each die inside the chunk
            wait_for(lambda n=attempt: _blocked_count(schema_db) >= n, what=f"delivery {attempt} blocked")
            worker.kill_child()
        # The 3rd redelivery is over the limit: parked without touching market_data.
        wait_for(lambda: queue_depths(app, ("parked",))["parked"] == 1, what="chunk parked")
    finally:
        locker.rollback()
        locker.close()
    assert stored_ids(schema_db, exchange, "BTCUSDT") == []
    assert flush(app)["moved"] == 1
    assert wait_for(lambda: stored_ids(schema_db, exchange, "BTCUSDT")) == list(range(1, 51))
