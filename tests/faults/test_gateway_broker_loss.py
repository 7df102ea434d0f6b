"""The broker goes away under the gateway: stopped while strategies trade, or restarted without its data.

The second case: a Redis without persistence restarts under the gateway's queued records.

Orders are answered (trades published on ZMQ) while no worker consumes the ``orders`` queue; then
Redis restarts empty.  With end-to-end confirmation the gateway sends every order, trade and
position record whose row is missing again; the control run (``TTQUANT_RESEND_AFTER=0``) shows the
fault loses them.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.faults.test_broker_loss import VolatileRedis, volatile_redis  # noqa: F401 - fixture
from tests.faults.test_gateway_crash import RISK, PriceFeed, StrategyClient, _shut_down, rows, start_gateway
from tests.support.services import free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]

ORDERS = 40


@pytest.mark.parametrize("resend_after", ["0", "4"], ids=["control-no-confirmation", "confirmation"])
def test_redis_restart_with_order_records_queued(resend_after: str, volatile_redis: VolatileRedis,  # noqa: F811
                                                 schema_db: str, tmp_path: Path,
                                                 stack_env: Callable[..., dict[str, str]],
                                                 start_worker: Callable[..., Any]) -> None:
    sid = f"gbl-{uuid.uuid4().hex[:8]}"
    pull, trade, md = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    risk = tmp_path / "risk.toml"
    risk.write_text(RISK)
    env = stack_env(schema_db, volatile_redis.url, ZMQ_PULL_ENDPOINT=pull, ZMQ_TRADE_ENDPOINT=trade,
                    TTQUANT_MD_CONNECT=md, TTQUANT_RISK_FILE=str(risk), TTQUANT_PUBLISH_TIMEOUT="0.5",
                    TTQUANT_RESEND_AFTER=resend_after)
    prices = PriceFeed(md)
    prices.start()
    prices.bound.wait(10)
    log = tmp_path / "gateway.log"
    gw, out = start_gateway(env, log)
    strategy = StrategyClient(pull, trade, sid, rate=20)
    strategy.start()
    try:
        wait_for(lambda: len(strategy.sent) >= ORDERS, timeout=90, what=f"{ORDERS} orders sent")
        strategy.sending.clear()
        sent = list(strategy.sent)
        # Trades come in order: the last order answered means every order was (the strategy may
        # have missed the first trades while its subscription connected; the rows count them all).
        wait_for(lambda: strategy.sent[-1] in {r.order_id for r in strategy.received}, timeout=60,
                 what="every order answered")
        wait_for(lambda: volatile_redis.client().llen("orders") >= ORDERS, timeout=60, what="records queued")
        volatile_redis.kill()  # no worker has taken anything yet: every record queued so far is gone
        volatile_redis.start()
        start_worker(env, queues="orders")
        if resend_after != "0":
            wait_for(lambda: len(rows(schema_db, "SELECT 1 FROM trades WHERE strategy_id = %s", sid)) >= len(sent),
                     timeout=120, what="every trade row, resent")
        else:
            time.sleep(8)  # as long as a resend would have taken
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(30) == 0, log.read_text()[-3000:]
    finally:
        _shut_down(strategy, prices, gw, out)
    received = {r.trade_id for r in strategy.received}
    trades = rows(schema_db, "SELECT trade_id, side, filled_volume FROM trades WHERE strategy_id = %s", sid)
    if resend_after == "0":
        assert len(trades) < len(sent) // 2, "the restart lost nothing: not a fault"
        return
    time.sleep(1)  # a straggling duplicate would land now
    assert len(trades) == len(sent) and received <= {t[0] for t in trades}  # one fill per market order
    orders = dict(rows(schema_db, "SELECT order_id, status FROM orders WHERE strategy_id = %s", sid))
    assert set(orders) == set(sent) and set(orders.values()) == {"FILLED"}
    fills = sum((Decimal(q) if side == "BUY" else -Decimal(q)) for _, side, q in trades)
    latest = rows(schema_db, "SELECT position FROM latest_positions WHERE strategy_id = %s", sid)
    assert latest and Decimal(latest[0][0]) == fills
    assert "sent again" in log.read_text()


def test_broker_down_orders_still_answered_records_spool_and_land(private_redis: Any, schema_db: str,
                                                                  tmp_path: Path,
                                                                  stack_env: Callable[..., dict[str, str]],
                                                                  start_worker: Callable[..., Any]) -> None:
    """The broker is stopped while strategies trade: trades keep coming at once, records go to the
    gateway's spool, and once the broker is back every order, trade and position lands once."""
    sid = f"gbd-{uuid.uuid4().hex[:8]}"
    pull, trade, md = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    risk = tmp_path / "risk.toml"
    risk.write_text(RISK)
    env = stack_env(schema_db, private_redis.url(), ZMQ_PULL_ENDPOINT=pull, ZMQ_TRADE_ENDPOINT=trade,
                    TTQUANT_MD_CONNECT=md, TTQUANT_RISK_FILE=str(risk), TTQUANT_PUBLISH_TIMEOUT="0.5")
    start_worker(env, queues="orders")
    prices = PriceFeed(md)
    prices.start()
    prices.bound.wait(10)
    log = tmp_path / "gateway.log"
    gw, out = start_gateway(env, log)
    strategy = StrategyClient(pull, trade, sid, rate=20)
    strategy.start()
    spool = Path(env["TTQUANT_HOME"]) / "gateway-spool"
    try:
        wait_for(lambda: len(strategy.received) >= 10, timeout=90, what="first trades")
        assert private_redis.stop()
        answered_at_stop = len(strategy.received)
        wait_for(lambda: len(list(spool.glob("*.json"))) >= 10, timeout=60, what="records spooled")
        wait_for(lambda: len(strategy.received) >= answered_at_stop + 40, timeout=60,
                 what="orders answered while the broker is down")
        private_redis.start()
        strategy.sending.clear()
        sent = list(strategy.sent)
        wait_for(lambda: sent[-1] in {r.order_id for r in strategy.received}, timeout=60, what="every order answered")
        wait_for(lambda: len(rows(schema_db, "SELECT 1 FROM trades WHERE strategy_id = %s", sid)) >= len(sent),
                 timeout=120, what="every trade row")
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(30) == 0, log.read_text()[-3000:]
    finally:
        _shut_down(strategy, prices, gw, out)
    time.sleep(1)  # a straggling duplicate would land now
    trades = rows(schema_db, "SELECT trade_id, side, filled_volume FROM trades WHERE strategy_id = %s", sid)
    assert len(trades) == len(sent) and {r.trade_id for r in strategy.received} <= {t[0] for t in trades}
    orders = dict(rows(schema_db, "SELECT order_id, status FROM orders WHERE strategy_id = %s", sid))
    assert set(orders) == set(sent) and set(orders.values()) == {"FILLED"}
    fills = sum((Decimal(q) if side == "BUY" else -Decimal(q)) for _, side, q in trades)
    latest = rows(schema_db, "SELECT position FROM latest_positions WHERE strategy_id = %s", sid)
    assert latest and Decimal(latest[0][0]) == fills
    assert not list(spool.glob("*.json"))
