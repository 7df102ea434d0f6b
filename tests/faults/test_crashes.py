"""Crashes and hangs: whole worker SIGKILL, broker hung mid-run, PostgreSQL restarted mid-run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
from tests.support.tcpproxy import TcpProxy
from tests.support.waiting import wait_for
from ttquant_tasks.models import chunk_payload

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]


def test_whole_worker_sigkill_mid_chunk_redelivered_after_visibility_timeout(
        schema_db: str, redis_url: str, stack_env: Callable[..., dict[str, str]],
        start_worker: Callable[..., Any]) -> None:
    """Main process and pool killed: Redis hands the unacked chunk out again after the visibility timeout."""
    env = stack_env(schema_db, redis_url, TTQUANT_VISIBILITY_TIMEOUT="8", TTQUANT_TASK_TIME_LIMIT="4")
    worker = start_worker(env)
    app = client_app(env)
    exchange = unique_exchange("wk")
    with market_data_locked(schema_db):
        app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, make_ticks(exchange, "BTCUSDT", 1, 100))])
        wait_for(lambda: blocked_count(schema_db) >= 1, what="worker inside the chunk")
        worker.kill()
    assert stored_ids(schema_db, exchange, "BTCUSDT") == []
    start_worker(env)  # a new worker restores the unacked message once it is older than the timeout
    assert wait_for(lambda: stored_ids(schema_db, exchange, "BTCUSDT"), timeout=90) == list(range(1, 101))


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[tuple[TcpProxy, str]]:
    base, db = redis_url.rsplit("/", 1)
    port = int(base.rsplit(":", 1)[1])
    proxy = TcpProxy(port)
    yield proxy, f"redis://127.0.0.1:{proxy.port}/{db}"
    proxy.close()


def test_broker_hung_then_back_feed_spools_and_replays(schema_db: str, redis_url: str,
                                                       redis_proxy: tuple[TcpProxy, str],
                                                       stack_env: Callable[..., dict[str, str]],
                                                       start_worker: Callable[..., Any]) -> None:
    """The broker accepts TCP but never answers: publishes time out, chunks spool, all replayed later."""
    proxy, proxied_url = redis_proxy
    exchange = unique_exchange("hung")
    env = stack_env(schema_db, proxied_url, TTQUANT_SYMBOLS="BTCUSDT,ETHUSDT", ZMQ_PUB_ENDPOINT="tcp://127.0.0.1:0",
                    TTQUANT_PUBLISH_TIMEOUT="0.5")
    start_worker({**env, "CELERY_BROKER_URL": redis_url})  # the worker talks to Redis directly
    feed = feed_process(env, exchange, rate=1000, duration=10)
    home = Path(env["TTQUANT_HOME"])
    time.sleep(2)
    proxy.set_mode("hang")
    wait_for(lambda: len(list((home / "spool").glob("*.json"))) >= 3, timeout=30, what="chunks spooled while hung")
    time.sleep(2)
    proxy.set_mode("forward")
    out, _ = feed.communicate(timeout=90)
    assert feed.returncode == 0, out[-3000:]
    counts = feed_counts(env)
    assert counts["spooled"] > 0 and counts["lost"] == 0 and counts["spool_ticks"] == 0
    assert counts["ticks"] >= 1000 * 10 * 0.5  # the hang never stalled the receive loop
    assert_all_once(schema_db, exchange, ("BTCUSDT", "ETHUSDT"), counts["ticks"])


def test_postgres_restarted_while_ticks_flow(private_pg: Any, redis_url: str,
                                             stack_env: Callable[..., dict[str, str]],
                                             start_worker: Callable[..., Any]) -> None:
    """A restart mid-run (COPYs in flight are cut): retries bring every tick in, none twice."""
    from ttquant_tasks.storage.migrate import init_db
    from ttquant_tasks.tasks.parking import flush, queue_depths

    uri = private_pg.url()
    init_db(uri, flavour="plain")
    exchange = "restart"
    env = stack_env(uri, redis_url, TTQUANT_SYMBOLS="BTCUSDT,ETHUSDT", ZMQ_PUB_ENDPOINT="tcp://127.0.0.1:0",
                    TTQUANT_WRITE_RETRIES="6", TTQUANT_RETRY_BACKOFF_MAX="2")
    start_worker(env, concurrency=2)
    feed = feed_process(env, exchange, rate=2000, duration=8)
    time.sleep(3)
    private_pg.stop()
    time.sleep(2)
    private_pg.start()
    out, _ = feed.communicate(timeout=90)
    assert feed.returncode == 0, out[-3000:]
    counts = feed_counts(env)
    app = client_app(env)
    if queue_depths(app, ("parked",))["parked"]:
        flush(app)  # chunks whose retries ran out while the server was away
    assert_all_once(uri, exchange, ("BTCUSDT", "ETHUSDT"), counts["ticks"])
