"""``ttquant up`` as a user runs it (with DB_URI/CELERY_BROKER_URL set, so nothing embedded starts):
ticks persist, and ``ttquant order`` gets a fill that lands in orders, trades and positions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.support.services import free_port
from tests.support.waiting import wait_for
from ttquant_tasks.storage.engine import get_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def rows(db_uri: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    import psycopg2

    conn = psycopg2.connect(db_uri)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def test_up_persists_ticks_and_orders_then_stops_cleanly(schema_db: str, redis_url: str,
                                                         stack_env: Callable[..., dict[str, str]]) -> None:
    md, pull, trade = free_port(), free_port(), free_port()
    env = {**os.environ, **stack_env(schema_db, redis_url,
                                     ZMQ_PUB_ENDPOINT=f"tcp://127.0.0.1:{md}", TTQUANT_MD_CONNECT=f"tcp://127.0.0.1:{md}",
                                     ZMQ_PULL_ENDPOINT=f"tcp://127.0.0.1:{pull}",
                                     ZMQ_TRADE_ENDPOINT=f"tcp://127.0.0.1:{trade}")}
    exchange = f"up{time.time_ns() % 10**9}"
    up = subprocess.Popen([sys.executable, "-m", "ttquant_tasks.cli", "up", "--source", "sim", "--exchange", exchange,
                           "--symbols", "BTCUSDT,ETHUSDT", "--rate", "500", "--duration", "120"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        engine = get_engine(schema_db)
        from ttquant_tasks.storage.queries import tick_ids

        wait_for(lambda: len(tick_ids(engine, exchange, "BTCUSDT")) > 100, timeout=90, what="ticks persisted")
        strategy = f"s{exchange}"
        order = subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", "order", "BUY", "0.015", "BTCUSDT",
                                "--strategy", strategy, "--timeout", "20"], env=env, capture_output=True, text=True,
                               timeout=60)
        assert order.returncode == 0, order.stderr
        fills = [json.loads(line) for line in order.stdout.splitlines()]
        assert fills and all(f["status"] == "FILLED" for f in fills)
        assert sum(float(f["quantity"]) for f in fills) == pytest.approx(0.015)
        order_id = fills[0]["order_id"]
        wait_for(lambda: rows(schema_db, "SELECT status FROM orders WHERE order_id = %s", order_id) == [("FILLED",)],
                 what="order row FILLED")
        wait_for(lambda: len(rows(schema_db, "SELECT 1 FROM trades WHERE order_id = %s", order_id)) == len(fills),
                 what="trade rows")
        pos = wait_for(lambda: rows(schema_db, "SELECT position, avg_price FROM latest_positions "
                                                "WHERE strategy_id = %s", strategy), what="position row")
        assert str(pos[0][0]) == "0.015" and pos[0][1] is not None
    finally:
        up.send_signal(signal.SIGINT)  # as Ctrl-C
        out, _ = up.communicate(timeout=120)
    assert up.returncode == 0, out[-3000:]
    totals = json.loads(out.rsplit("ttquant up: totals ", 1)[1].splitlines()[0])
    assert totals["lost_chunks"] == 0 and totals["persisted_ticks"] == totals["published_ticks"] > 100
    assert totals["queues"]["parked"] == 0
