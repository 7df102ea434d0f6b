"""Disk spool unusable AND broker down, with the real ``ttquant feed`` process.

``$TTQUANT_HOME/spool`` is a regular file (so the spool directory cannot be created) and the broker
URL points at a closed port.  Promise: the feed says so at start with the path in the message, keeps
publishing every tick on ZeroMQ, exits 0 on SIGTERM, and counts every chunk it could neither publish
nor spool as ``lost`` in its stats (``$TTQUANT_HOME/run/feed.json``) -- never a silent drop.
With only one of the two broken nothing is lost (see ``unit/test_enqueuer.py`` and the broker
outage tests).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from tests.support.checks import feed_counts, feed_process, unique_exchange
from tests.support.services import free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(120)]


def test_spool_is_a_file_and_broker_down_feed_publishes_and_counts_losses(
        schema_db: str, stack_env: Callable[..., dict[str, str]]) -> None:
    md = free_port()
    env = stack_env(schema_db, f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
                    TTQUANT_SYMBOLS="BTCUSDT,ETHUSDT", ZMQ_PUB_ENDPOINT=f"tcp://127.0.0.1:{md}",
                    TTQUANT_PUBLISH_TIMEOUT="0.3", TTQUANT_CHUNK_AGE="0.2", TTQUANT_ENQUEUE_QUEUE_MAX="3")
    home = Path(env["TTQUANT_HOME"])
    home.mkdir(parents=True)
    spool = home / "spool"
    spool.write_text("not a directory\n")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"md.")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(f"tcp://127.0.0.1:{md}")
    feed = feed_process(env, unique_exchange("nospool"), rate=500, duration=60)
    received = 0
    try:
        def count() -> int:
            nonlocal received
            for _ in range(500):  # bounded: at a steady rate poll() never comes back empty
                if not sub.poll(20):
                    break
                sub.recv_multipart()
                received += 1
            return received

        wait_for(lambda: count() >= 2000, timeout=60, what="ticks on ZMQ")
        feed.send_signal(signal.SIGTERM)
        out, _ = feed.communicate(timeout=30)
    finally:
        if feed.poll() is None:
            feed.kill()
            feed.communicate(timeout=10)
        sub.close(0)
    assert feed.returncode == 0, out[-3000:]
    assert str(spool) in out and "LOST" in out, out[-3000:]
    assert spool.read_text() == "not a directory\n"
    counts = feed_counts(env)
    assert counts["ticks"] >= received >= 2000
    # Never published (the broker was down), never spooled: every chunk counted lost, none silent.
    assert counts["published"] == 0 and counts["spooled"] == 0
    assert counts["lost"] == counts["submitted"] > 0, counts
    print(f"SPOOL_UNUSABLE ticks={counts['ticks']} zmq_received={received} chunks={counts['submitted']} "
          f"lost={counts['lost']}")
