"""Soak (``pytest -m soak``): sim feed + gateway + worker at a steady rate while a fault injector
picks faults at random; then everything is audited: 0 lost, 0 duplicated.

Length: ``TTQUANT_SOAK_SECONDS`` (default 120); seed: ``TTQUANT_SOAK_SEED`` (printed, to replay a run).
The measured figures are printed as one JSON line (``SOAK {...}``) for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
import zmq

from tests.support.checks import assert_all_once, feed_counts, feed_process
from tests.support.services import free_port
from tests.support.stack import client_app
from tests.support.waiting import wait_for
from ttquant_tasks.bus.codec import decode_trade, encode_order

QUIET_TAIL_S = 30.0  # no faults for the last seconds: > 2x RESEND_AFTER, so lost messages are resent

pytestmark = [pytest.mark.soak, pytest.mark.faults, pytest.mark.timeout(3600)]

SYMBOLS = ("BTCUSDT", "ETHUSDT")


class StrategyClient(threading.Thread):
    """Sends small market orders at ``rate``/s and records every trade that answers them."""

    def __init__(self, pull: int, trade: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.pull, self.trade, self.rate = pull, trade, rate
        self.sent: list[str] = []
        self.trades: dict[str, list[str]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        ctx = zmq.Context.instance()
        push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        push.connect(f"tcp://127.0.0.1:{self.pull}")
        sub.connect(f"tcp://127.0.0.1:{self.trade}")
        sub.setsockopt(zmq.SUBSCRIBE, b"trade.")
        next_send = time.monotonic() + 1.0
        side = "BUY"
        while not self.stop.is_set() or sub.poll(500):
            if not self.stop.is_set() and time.monotonic() >= next_send:
                oid = f"soak-{uuid.uuid4().hex[:12]}"
                push.send(encode_order(order_id=oid, strategy_id="soak", symbol="BTCUSDT", price=0.0,
                                       quantity="0.001", side=side, timestamp=time.time_ns()))
                self.sent.append(oid)
                side = "SELL" if side == "BUY" else "BUY"
                next_send += 1 / self.rate
            if sub.poll(20):
                t = decode_trade(sub.recv_multipart()[1])
                self.trades.setdefault(t.order_id, []).append(t.trade_id)
        push.close(0)
        sub.close(0)


def q(uri: str, sql: str) -> int:
    conn = psycopg2.connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def _missing_report(uri: str, t0: float) -> str:
    """Where the missing ids are (ranges, local time since the soak began) and what dead letters say."""
    since_epoch_ns = time.time_ns() - int((time.monotonic() - t0) * 1e9)
    conn = psycopg2.connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT symbol, prev + 1, trade_id - 1, (local_time - %s) / 1e9 FROM (
                             SELECT symbol, trade_id, local_time,
                                    lag(trade_id) OVER (PARTITION BY symbol ORDER BY trade_id) AS prev
                             FROM market_data WHERE exchange = 'soak') t
                           WHERE trade_id - prev > 1 ORDER BY 4""", (since_epoch_ns,))
            holes = cur.fetchall()
            cur.execute("SELECT task, reason FROM dead_letters")
            dead = cur.fetchall()
    finally:
        conn.close()
    return f"holes (symbol, from, to, seconds): {holes[:20]}\ndead letters: {dead[:5]}"


def test_soak_random_faults_nothing_lost_nothing_duplicated(private_pg: Any, private_redis: Any,
                                                            stack_env: Callable[..., dict[str, str]],
                                                            start_worker: Callable[..., Any]) -> None:
    seconds = float(os.environ.get("TTQUANT_SOAK_SECONDS", "120"))
    seed = int(os.environ.get("TTQUANT_SOAK_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    print(f"soak: {seconds}s, seed {seed}")
    from ttquant_tasks.storage.migrate import init_db
    from ttquant_tasks.tasks.parking import flush, queue_depths

    uri = private_pg.url()
    init_db(uri, flavour="plain")
    md, pull, trade = free_port(), free_port(), free_port()
    env = stack_env(uri, private_redis.url(), TTQUANT_SYMBOLS=",".join(SYMBOLS),
                    ZMQ_PUB_ENDPOINT=f"tcp://127.0.0.1:{md}", TTQUANT_MD_CONNECT=f"tcp://127.0.0.1:{md}",
                    ZMQ_PULL_ENDPOINT=f"tcp://127.0.0.1:{pull}", ZMQ_TRADE_ENDPOINT=f"tcp://127.0.0.1:{trade}",
                    TTQUANT_WRITE_RETRIES="3", TTQUANT_RETRY_BACKOFF_MAX="1", TTQUANT_PUBLISH_TIMEOUT="0.5",
                    TTQUANT_VISIBILITY_TIMEOUT="20", TTQUANT_TASK_TIME_LIMIT="8", TTQUANT_RESEND_AFTER="10")
    workers = [start_worker(env, concurrency=2)]
    gateway = subprocess.Popen([sys.executable, "-m", "ttquant_tasks.cli", "gateway"], env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    feed = feed_process(env, "soak", rate=1000, duration=seconds * 3)
    strategy = StrategyClient(pull, trade, rate=5)
    strategy.start()
    ticks_total = 0
    faults: dict[str, int] = {}
    timeline: list[tuple[float, str]] = []  # (seconds since start, fault) for the failure report
    t0 = time.monotonic()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            time.sleep(rng.uniform(4, 9))
            fault = rng.choice(["worker_child", "worker", "postgres", "redis", "redis_lost", "feed_restart",
                                "none"])
            faults[fault] = faults.get(fault, 0) + 1
            timeline.append((round(time.monotonic() - t0, 1), fault))
            if fault == "worker_child" and workers[-1].children():
                workers[-1].kill_child()
            elif fault == "worker":
                workers[-1].kill()
                workers.append(start_worker(env, concurrency=2))
            elif fault == "postgres":
                private_pg.stop()
                time.sleep(rng.uniform(2, 6))
                private_pg.start()
            elif fault == "redis":
                private_redis.stop()
                time.sleep(rng.uniform(2, 6))
                private_redis.start()
            elif fault == "redis_lost":  # restarted with nothing on disk: every queued message is gone
                private_redis.stop()
                shutil.rmtree(private_redis.data_dir, ignore_errors=True)
                private_redis.start()
            elif fault == "feed_restart":
                feed.send_signal(signal.SIGTERM)
                feed.communicate(timeout=60)
                counts = feed_counts(env)
                assert counts["lost"] == 0
                ticks_total += counts["ticks"]
                feed = feed_process(env, "soak", rate=1000, duration=seconds * 3)
        # A quiet tail: what the faults lost is resent (RESEND_AFTER below) while everything still runs.
        time.sleep(QUIET_TAIL_S)
    finally:
        strategy.stop.set()
        strategy.join(30)
        feed.send_signal(signal.SIGTERM)
        out, _ = feed.communicate(timeout=120)
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(60)
    assert feed.returncode == 0, out[-3000:]
    counts = feed_counts(env)
    ticks_total += counts["ticks"]
    assert counts["lost"] == 0
    # A feed that stops with a backlog leaves it in its spool (that is the promise); the next start
    # replays it. Start short runs until the spool is empty, counting their ticks too.
    while counts["spool_ticks"]:
        short = feed_process(env, "soak", rate=1000, duration=3)
        short.communicate(timeout=120)
        counts = feed_counts(env)
        assert counts["lost"] == 0
        ticks_total += counts["ticks"]
    app = client_app(env)

    def settled() -> bool:
        flush(app)
        depths = queue_depths(app, ("ticks", "orders", "parked"))
        return all(v == 0 for v in depths.values())

    wait_for(settled, timeout=180, interval=2, what="queues drained, nothing parked")
    try:
        assert_all_once(uri, "soak", SYMBOLS, ticks_total, timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nfaults (s since start): {timeline}\n{_missing_report(uri, t0)}") from None
    answered = [oid for oid in strategy.sent if oid in strategy.trades]
    trade_ids = {tid for tids in strategy.trades.values() for tid in tids}
    wait_for(lambda: q(uri, "SELECT count(*) FROM trades WHERE strategy_id = 'soak'") >= len(trade_ids),
             timeout=120, what="trade rows")
    stored_trades = q(uri, "SELECT count(*) FROM trades WHERE strategy_id = 'soak'")
    stored_orders = q(uri, "SELECT count(*) FROM orders WHERE strategy_id = 'soak'")
    filled = q(uri, "SELECT count(*) FROM trades WHERE strategy_id = 'soak' AND status = 'FILLED'")
    figures = {"seconds": seconds, "seed": seed, "faults": faults, "ticks_sent": ticks_total,
               "ticks_stored": ticks_total, "orders_sent": len(strategy.sent), "orders_answered": len(answered),
               "trades_published": len(trade_ids), "trades_stored": stored_trades, "orders_stored": stored_orders,
               "filled": filled, "duplicates": 0}
    print("SOAK " + json.dumps(figures))
    assert stored_trades == len(trade_ids), "every published trade stored once"
    assert stored_orders <= len(strategy.sent)
    assert stored_orders >= filled - 0  # each filled order has its order row
