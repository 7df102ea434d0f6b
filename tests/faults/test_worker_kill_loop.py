"""Whole-worker SIGKILL, repeated, while the sim feed publishes chunks: every tick stored once.

(Issue 8: "worker SIGKILL mid-chunk (repeated)".)  Redis keeps unacked messages in a hash and
hands them out again after the visibility timeout, which the test sets short.  One window is not
covered by that: kombu's Redis transport pops a message (BRPOP) before it records it as unacked,
and a worker killed in between takes the message with it (seen here: 1 chunk in 2-4 runs).  The
feed's end-to-end confirmation resends such a chunk; the test sets it short, and gives the feed
time after the last kill to do so."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.support.checks import assert_all_once, feed_counts, feed_process, unique_exchange

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(400)]


def test_repeated_whole_worker_sigkill_loses_nothing(schema_db: str, redis_url: str,
                                                     stack_env: Callable[..., dict[str, str]],
                                                     start_worker: Callable[..., Any]) -> None:
    exchange = unique_exchange("kl")
    env = stack_env(schema_db, redis_url, TTQUANT_SYMBOLS="BTCUSDT,ETHUSDT", ZMQ_PUB_ENDPOINT="tcp://127.0.0.1:0",
                    TTQUANT_CHUNK_SIZE="100", TTQUANT_VISIBILITY_TIMEOUT="10", TTQUANT_TASK_TIME_LIMIT="4",
                    TTQUANT_RESEND_AFTER="5")
    worker = start_worker(env, concurrency=2)
    feed = feed_process(env, exchange, rate=1000, duration=45)
    for _ in range(5):
        time.sleep(4)
        worker.kill()
        worker = start_worker(env, concurrency=2)
    out, _ = feed.communicate(timeout=120)
    assert feed.returncode == 0, out[-3000:]
    counts = feed_counts(env)
    assert counts["lost"] == 0 and counts["spool_ticks"] == 0
    assert counts["confirm"]["given_up"] == 0, counts["confirm"]
    try:
        assert_all_once(schema_db, exchange, ("BTCUSDT", "ETHUSDT"), counts["ticks"], timeout=90)
    except AssertionError as exc:
        r = redis.Redis.from_url(redis_url)
        state = {"ticks": r.llen("ticks"), "unacked": r.hlen("unacked"), "unacked_index": r.zcard("unacked_index")}
        raise AssertionError(f"{exc}; redis: {state}") from None
