"""Chunks through a real broker and a real worker into the real database, exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest

from tests.support.checks import (
    assert_all_once,
    blocked_count,
    feed_counts,
    feed_process,
    make_ticks,
    market_data_locked,
    stored_ids,
    unique_exchange,
)
from tests.support.stack import client_app
from tests.support.waiting import wait_for
from ttquant_tasks.models import chunk_payload
from ttquant_tasks.storage.engine import get_engine
from ttquant_tasks.storage.queries import duplicate_ticks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_chunk_delivered_twice_lands_once(schema_db: str, broker: str, stack_env: Callable[..., dict[str, str]],
                                          start_worker: Callable[..., Any]) -> None:
    env = stack_env(schema_db, broker)
    start_worker(env)
    app = client_app(env)
    exchange = unique_exchange("dup")
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


def test_worker_child_killed_mid_chunk_is_redelivered_once(schema_db: str, redis_url: str,
                                                           stack_env: Callable[..., dict[str, str]],
                                                           start_worker: Callable[..., Any]) -> None:
    env = stack_env(schema_db, redis_url)
    worker = start_worker(env)
    app = client_app(env)
    exchange = unique_exchange("kill")
    # Hold a lock so the worker's INSERT blocks mid-chunk, then kill the pool child doing it.
    with market_data_locked(schema_db):
        app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, make_ticks(exchange, "ETHUSDT", 1, 300))])
        wait_for(lambda: blocked_count(schema_db) > 0, what="worker blocked inside the chunk")
        worker.kill_child()
        time.sleep(1.0)
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
    exchange = unique_exchange("bad")
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
    env = stack_env(schema_db, broker, TTQUANT_SYMBOLS="BTCUSDT,ETHUSDT", ZMQ_PUB_ENDPOINT="tcp://127.0.0.1:0")
    start_worker(env, concurrency=2)
    exchange = unique_exchange("sim")
    out, _ = feed_process(env, exchange, rate=2000, duration=3).communicate(timeout=120)
    counts = feed_counts(env)
    assert counts["lost"] == 0 and counts["spool_ticks"] == 0, out[-3000:]
    assert counts["ticks"] > 1000  # ticks received (and sent on ZMQ)
    assert_all_once(schema_db, exchange, ("BTCUSDT", "ETHUSDT"), counts["ticks"], timeout=90)


def test_poison_chunk_stops_looping_and_is_parked(schema_db: str, redis_url: str,
                                                  stack_env: Callable[..., dict[str, str]],
                                                  start_worker: Callable[..., Any]) -> None:
    """A chunk whose worker dies every time is parked after TTQUANT_MAX_DELIVERIES redeliveries, not looped."""
    from ttquant_tasks.tasks.parking import flush, queue_depths

    env = stack_env(schema_db, redis_url, TTQUANT_MAX_DELIVERIES="2")
    worker = start_worker(env)
    app = client_app(env)
    exchange = unique_exchange("poison")
    with market_data_locked(schema_db):
        app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, make_ticks(exchange, "BTCUSDT", 1, 50))])
        for attempt in range(1, 4):  # first delivery + 2 redeliveries each die inside the chunk
            wait_for(lambda n=attempt: blocked_count(schema_db) >= n, what=f"delivery {attempt} blocked")
            worker.kill_child()
        # The 3rd redelivery is over the limit: parked without touching market_data.
        wait_for(lambda: queue_depths(app, ("parked",))["parked"] == 1, what="chunk parked")
    assert stored_ids(schema_db, exchange, "BTCUSDT") == []
    assert flush(app)["moved"] == 1
    assert wait_for(lambda: stored_ids(schema_db, exchange, "BTCUSDT")) == list(range(1, 51))


def test_messages_of_the_wrong_shape_are_dead_lettered(schema_db: str, redis_url: str,
                                                       stack_env: Callable[..., dict[str, str]],
                                                       start_worker: Callable[..., Any]) -> None:
    """Wrong argument counts and kwargs reach our code and are kept with the reason; the worker goes on."""
    env = stack_env(schema_db, redis_url)
    start_worker(env)
    app = client_app(env)
    tag = unique_exchange("shape")
    app.send_task("ttquant.write_ticks", args=[], kwargs={"tag": tag})
    app.send_task("ttquant.write_ticks", args=[tag, tag])
    app.send_task("ttquant.write_order", args=[{"kind": "order", "tag": tag}])
    good = unique_exchange("after")
    app.send_task("ttquant.write_ticks", args=[chunk_payload(good, make_ticks(good, "BTCUSDT", 1, 3))])

    def reasons() -> list[str]:
        conn = psycopg2.connect(schema_db)
        try:
            with conn.cursor() as c:
                c.execute("SELECT reason FROM dead_letters WHERE payload::text LIKE %s", (f"%{tag}%",))
                return [r[0] for r in c.fetchall()]
        finally:
            conn.close()

    found = wait_for(lambda: len(reasons()) == 3 and reasons(), what="three dead letters")
    assert sum("exactly one payload" in r for r in found) == 2
    assert wait_for(lambda: stored_ids(schema_db, good, "BTCUSDT")) == [1, 2, 3]


def test_dead_letters_listed_and_replayed_once_the_cause_is_fixed(schema_db: str, redis_url: str,
                                                                  stack_env: Callable[..., dict[str, str]],
                                                                  start_worker: Callable[..., Any]) -> None:
    """A chunk dead-lettered by a cause since fixed (here: recorded directly) goes back with --replay."""
    import json
    import os
    import subprocess
    import sys

    from ttquant_tasks.storage.writers import insert_dead_letter

    exchange = unique_exchange("dl")
    payload = chunk_payload(exchange, make_ticks(exchange, "BTCUSDT", 1, 7))
    insert_dead_letter(get_engine(schema_db), "ttquant.write_ticks", "unexpected Boom: fixed since", payload)
    env = {**os.environ, **stack_env(schema_db, redis_url)}

    def ttquant(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", *args], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    listed = json.loads(ttquant("deadletters"))
    assert any(r["reason"] == "unexpected Boom: fixed since" and r["count"] == 1 for r in listed)
    start_worker(stack_env(schema_db, redis_url))
    assert json.loads(ttquant("deadletters", "--replay", "--task", "ttquant.write_ticks"))["replayed"] >= 1
    assert wait_for(lambda: stored_ids(schema_db, exchange, "BTCUSDT")) == list(range(1, 8))
    assert not any(r["reason"] == "unexpected Boom: fixed since" for r in json.loads(ttquant("deadletters")))
