"""Outages: the database or the broker goes away while ticks flow; afterwards every tick is in once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.support.checks import assert_all_once, feed_counts, feed_process, make_ticks, unique_exchange
from tests.support.services import free_port
from tests.support.stack import client_app
from tests.support.waiting import wait_for
from ttquant_tasks.models import chunk_payload

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]


def _park_five_chunks(private_pg: Any, redis_url: str, stack_env: Callable[..., dict[str, str]],
                      start_worker: Callable[..., Any], symbol: str, ticks_n: int) -> tuple[str, Any, Any, list[Any]]:
    """Database stopped, five 100-tick chunks sent: their retries (2, backoff capped at 1 s) are spent
    and all five park.  Returns (database uri, client app, worker, the ``ticks_n`` ticks)."""
    from ttquant_tasks.storage.migrate import init_db
    from ttquant_tasks.tasks.parking import queue_depths

    uri = private_pg.url()
    init_db(uri, flavour="plain")
    env = stack_env(uri, redis_url)
    worker = start_worker(env)
    app = client_app(env)
    ticks = make_ticks("sim", symbol, 1, ticks_n)
    assert private_pg.stop()
    for i in range(0, 500, 100):
        app.send_task("ttquant.write_ticks", args=[chunk_payload("sim", ticks[i:i + 100])])
    wait_for(lambda: queue_depths(app, ("parked",))["parked"] == 5, timeout=90, what="5 parked chunks")
    return uri, app, worker, ticks


def test_database_down_parks_then_flush_brings_every_tick(private_pg: Any, redis_url: str,
                                                          stack_env: Callable[..., dict[str, str]],
                                                          start_worker: Callable[..., Any]) -> None:
    from ttquant_tasks.tasks.parking import flush, queue_depths

    uri, app, _, _ = _park_five_chunks(private_pg, redis_url, stack_env, start_worker, "BTCUSDT", 500)
    assert flush(app)["database"] == "down"  # flush refuses while the database is away
    assert queue_depths(app, ("parked",))["parked"] == 5

    private_pg.start()
    result = flush(app)
    assert result["moved"] == 5 and result["parked"] == 0
    assert_all_once(uri, "sim", ("BTCUSDT",), 500, timeout=90)


def test_parked_chunks_come_back_by_themselves_when_the_database_does(
        private_pg: Any, redis_url: str, stack_env: Callable[..., dict[str, str]],
        start_worker: Callable[..., Any]) -> None:
    """No operator, no beat: the first write that succeeds after the outage requests the flush."""
    from ttquant_tasks.tasks.parking import queue_depths

    uri, app, worker, ticks = _park_five_chunks(private_pg, redis_url, stack_env, start_worker, "ETHUSDT", 600)
    private_pg.start()
    app.send_task("ttquant.write_ticks", args=[chunk_payload("sim", ticks[500:])])  # live traffic resumes
    assert_all_once(uri, "sim", ("ETHUSDT",), 600, timeout=90)
    assert queue_depths(app, ("parked",))["parked"] == 0
    assert "flush of parked chunks requested" in worker.log()


def test_broker_down_feed_keeps_publishing_and_spool_replays(private_redis: Any, schema_db: str, tmp_path: Path,
                                                             stack_env: Callable[..., dict[str, str]],
                                                             start_worker: Callable[..., Any]) -> None:
    broker = private_redis.url()
    port = free_port()
    exchange = unique_exchange("bd")
    env = stack_env(schema_db, broker, TTQUANT_SYMBOLS="BTCUSDT,ETHUSDT",
                    ZMQ_PUB_ENDPOINT=f"tcp://127.0.0.1:{port}", TTQUANT_PUBLISH_TIMEOUT="0.5")
    # Subscriber counts what strategies see while the broker is away.
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"md.")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(f"tcp://127.0.0.1:{port}")
    received = {"n": 0}
    done = threading.Event()

    def listen() -> None:
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        while not done.is_set():
            if poller.poll(100):
                sub.recv_multipart()
                received["n"] += 1

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert private_redis.stop()
    feed = feed_process(env, exchange, rate=1000, duration=8)
    spool = Path(env["TTQUANT_HOME"]) / "spool"
    wait_for(lambda: spool.exists() and len(list(spool.glob("*.json"))) >= 3, timeout=30, what="spooled chunks")
    seen_at_outage = received["n"]
    time.sleep(2)
    seen_later = received["n"]
    private_redis.start()  # broker back while the feed still runs: the spool replays in order
    out, _ = feed.communicate(timeout=60)
    assert feed.returncode == 0, out[-3000:]
    done.set()
    listener.join(5)
    counts = feed_counts(env)
    published = counts["ticks"]
    assert counts["spooled"] > 0 and counts.get("lost", 0) == 0
    assert seen_later > seen_at_outage, "strategies stopped receiving ticks while the broker was down"
    assert received["n"] >= published - 1000  # every tick but ZMQ's slow-joiner start (< 1 s of ticks)
    assert published >= 1000 * 8 * 0.5  # the outage did not slow the receive loop to a crawl
    start_worker(env)
    assert_all_once(schema_db, exchange, ("BTCUSDT", "ETHUSDT"), published)
    assert not list(spool.glob("*.json"))
