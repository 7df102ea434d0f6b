"""A worker stopped (SIGTERM) or killed (SIGKILL) while its chunks wait for a retry, database down.

A retried Celery task waits in the worker that reserved it (an ETA message, unacked).  Whatever
happens to that worker, the chunks must come back: a warm shutdown hands them back to the broker,
a killed worker's unacked messages are restored by Redis after the visibility timeout.  Then the
database returns and a new worker stores every tick once, with nothing parked.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.checks import assert_all_once, make_ticks, unique_exchange
from tests.support.stack import client_app
from tests.support.waiting import wait_for
from ttquant_tasks.models import chunk_payload

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]

CHUNKS, SIZE = 5, 100


def chunks_waiting_for_a_retry(private_pg: Any, broker_url: str, stack_env: Callable[..., dict[str, str]],
                               start_worker: Callable[..., Any], prefix: str, retried: int,
                               **extra: str) -> tuple[dict[str, str], Any, Any, str]:
    """A worker whose five chunks wait for a retry: the database stopped, then the chunks sent, until
    the worker logged ``retried`` retries.  A retry budget far longer than the test keeps them in
    their retry wait (backoff up to 5 s).  Returns (env, client app, worker, exchange)."""
    from ttquant_tasks.storage.migrate import init_db

    uri = private_pg.url()
    init_db(uri, flavour="plain")
    env = stack_env(uri, broker_url, TTQUANT_WRITE_RETRIES="50", TTQUANT_RETRY_BACKOFF_MAX="5", **extra)
    worker = start_worker(env)
    app = client_app(env)
    exchange = unique_exchange(prefix)
    ticks = make_ticks(exchange, "BTCUSDT", 1, CHUNKS * SIZE)
    assert private_pg.stop()
    for i in range(0, CHUNKS * SIZE, SIZE):
        app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, ticks[i:i + SIZE])])
    wait_for(lambda: worker.log().count("retry ") >= retried, timeout=90, what=f"{retried} retries logged")
    return env, app, worker, exchange


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_worker_restart_while_chunks_wait_for_a_retry(how: str, private_pg: Any, redis_url: str,
                                                      stack_env: Callable[..., dict[str, str]],
                                                      start_worker: Callable[..., Any]) -> None:
    from ttquant_tasks.tasks.parking import queue_depths

    # Every chunk retried at least twice, so each is in its retry wait when the worker goes.
    env, app, worker, exchange = chunks_waiting_for_a_retry(
        private_pg, redis_url, stack_env, start_worker, "rr", 2 * CHUNKS,
        TTQUANT_VISIBILITY_TIMEOUT="8", TTQUANT_TASK_TIME_LIMIT="4")
    if how == "sigterm":
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)  # warm shutdown: the reserved ETA messages go back
        worker.proc.wait(60)
    else:
        worker.kill()  # the main process and its pool: Redis restores the unacked messages later
    private_pg.start()
    start_worker(env)
    assert_all_once(env["DB_URI"], exchange, ("BTCUSDT",), CHUNKS * SIZE, timeout=120)
    assert queue_depths(app, ("parked",))["parked"] == 0


def test_worker_rides_out_a_redis_restart_while_holding_unacked_chunks(
        private_pg: Any, private_redis: Any, stack_env: Callable[..., dict[str, str]],
        start_worker: Callable[..., Any]) -> None:
    """kombu hands reserved messages back when the broker connection drops; with Redis down that
    failed with an AttributeError the worker treated as unrecoverable (it exited: under honcho the
    whole stack would stop).  The worker must stay up and store everything once Redis is back."""
    env, _, worker, exchange = chunks_waiting_for_a_retry(private_pg, private_redis.url(), stack_env, start_worker,
                                                          "rk", CHUNKS)
    assert private_redis.stop()
    wait_for(lambda: "Connection to broker lost" in worker.log(), timeout=60, what="the worker noticing")
    time.sleep(3)  # kombu's hand-back of the reserved messages fails in this window
    assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-3000:]
    private_redis.start()
    private_pg.start()
    # The default visibility timeout is 1 h: the chunks land this soon only because the worker hands
    # its reserved messages back as soon as Redis answers again.
    assert_all_once(env["DB_URI"], exchange, ("BTCUSDT",), CHUNKS * SIZE, timeout=120)
    assert worker.proc.poll() is None and "Unrecoverable error" not in worker.log()
