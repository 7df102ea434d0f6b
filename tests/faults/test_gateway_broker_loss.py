"""The broker goes away under the gateway: stopped while strategies trade, or restarted without its data.

The second case: a Redis without persistence restarts under the gateway's queued records.

Orders are answered (trades published on ZMQ) while no worker consumes the ``orders`` queue; then
Redis restarts empty.  With end-to-end confirmation the gateway sends every order, trade and
position record whose row is missing again; the control run (``TTQUANT_RESEND_AFTER=0``) shows the
fault loses them.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import pytest

from tests.faults.test_broker_loss import VolatileRedis, volatile_redis  # noqa: F401 - fixture
from tests.faults.test_gateway_crash import RISK, PriceFeed, StrategyClient, _shut_down, rows, start_gateway
from tests.support.services import free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]

ORDERS = 40


def gateway_env(stack_env: Callable[..., dict[str, str]], schema_db: str, broker_url: str, tmp_path: Path,
                **extra: str) -> dict[str, str]:
    """Environment of a `ttquant gateway` with its own ZMQ ports and a risk file that fills every order."""
    risk = tmp_path / "risk.toml"
    risk.write_text(RISK)
    pull, trade, md = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    return stack_env(schema_db, broker_url, ZMQ_PULL_ENDPOINT=pull, ZMQ_TRADE_ENDPOINT=trade, TTQUANT_MD_CONNECT=md,
                     TTQUANT_RISK_FILE=str(risk), TTQUANT_PUBLISH_TIMEOUT="0.5", **extra)


@dataclass
class Trading:
    """A price feed, a real `ttquant gateway` and a strategy trading through it (20 orders/s)."""

    prices: PriceFeed
    gw: subprocess.Popen[bytes]
    out: IO[bytes]
    log: Path
    strategy: StrategyClient

    @classmethod
    def start(cls, env: dict[str, str], log: Path, sid: str) -> Trading:
        prices = PriceFeed(env["TTQUANT_MD_CONNECT"])
        prices.start()
        prices.bound.wait(10)
        gw, out = start_gateway(env, log)
        # A market order before the gateway's first price is (rightly) REJECTED: trade only once a
        # probe strategy of its own got a fill, so every order of ``sid`` can fill.
        probe = StrategyClient(env["ZMQ_PULL_ENDPOINT"], env["ZMQ_TRADE_ENDPOINT"], f"{sid}-probe", rate=20)
        probe.start()
        try:
            wait_for(lambda: any(r.status == "FILLED" for r in probe.received), timeout=90,
                     what="the gateway filling orders (it has a price)")
        except BaseException:
            _shut_down(probe, prices, gw, out)
            raise
        probe.done.set()
        probe.join(10)
        strategy = StrategyClient(env["ZMQ_PULL_ENDPOINT"], env["ZMQ_TRADE_ENDPOINT"], sid, rate=20)
        strategy.start()
        return cls(prices, gw, out, log, strategy)

    def answered(self) -> set[str]:
        return {r.order_id for r in self.strategy.received}

    def stop_gateway(self) -> None:
        self.gw.send_signal(signal.SIGTERM)
        assert self.gw.wait(30) == 0, self.log.read_text()[-3000:]

    def shut_down(self) -> None:
        _shut_down(self.strategy, self.prices, self.gw, self.out)


def trade_rows(schema_db: str, sid: str) -> list[tuple[Any, ...]]:
    return rows(schema_db, "SELECT trade_id, side, filled_volume FROM trades WHERE strategy_id = %s", sid)


def assert_every_order_stored_once(schema_db: str, sid: str, sent: list[str], strategy: StrategyClient) -> None:
    """One FILLED trade per market order sent, every trade the strategy saw among them, every order
    FILLED, and ``latest_positions`` equal to the sum of the stored fills."""
    time.sleep(1)  # a straggling duplicate would land now
    trades = trade_rows(schema_db, sid)
    assert len(trades) == len(sent) and {r.trade_id for r in strategy.received} <= {t[0] for t in trades}
    orders = dict(rows(schema_db, "SELECT order_id, status FROM orders WHERE strategy_id = %s", sid))
    assert set(orders) == set(sent) and set(orders.values()) == {"FILLED"}
    fills = sum((Decimal(q) if side == "BUY" else -Decimal(q)) for _, side, q in trades)
    latest = rows(schema_db, "SELECT position FROM latest_positions WHERE strategy_id = %s", sid)
    assert latest and Decimal(latest[0][0]) == fills


@pytest.mark.parametrize("resend_after", ["0", "4"], ids=["control-no-confirmation", "confirmation"])
def test_redis_restart_with_order_records_queued(resend_after: str, volatile_redis: VolatileRedis,  # noqa: F811
                                                 schema_db: str, tmp_path: Path,
                                                 stack_env: Callable[..., dict[str, str]],
                                                 start_worker: Callable[..., Any]) -> None:
    sid = f"gbl-{uuid.uuid4().hex[:8]}"
    env = gateway_env(stack_env, schema_db, volatile_redis.url, tmp_path, TTQUANT_RESEND_AFTER=resend_after)
    t = Trading.start(env, tmp_path / "gateway.log", sid)
    try:
        wait_for(lambda: len(t.strategy.sent) >= ORDERS, timeout=90, what=f"{ORDERS} orders sent")
        t.strategy.sending.clear()
        sent = list(t.strategy.sent)
        # Trades come in order: the last order answered means every order was (the strategy may
        # have missed the first trades while its subscription connected; the rows count them all).
        wait_for(lambda: sent[-1] in t.answered(), timeout=60, what="every order answered")
        wait_for(lambda: volatile_redis.client().llen("orders") >= ORDERS, timeout=60, what="records queued")
        volatile_redis.kill()  # no worker has taken anything yet: every record queued so far is gone
        volatile_redis.start()
        start_worker(env, queues="orders")
        if resend_after != "0":
            wait_for(lambda: len(trade_rows(schema_db, sid)) >= len(sent), timeout=120, what="every trade row, resent")
        else:
            time.sleep(8)  # as long as a resend would have taken
        t.stop_gateway()
    finally:
        t.shut_down()
    if resend_after == "0":
        assert len(trade_rows(schema_db, sid)) < len(sent) // 2, "the restart lost nothing: not a fault"
        return
    assert_every_order_stored_once(schema_db, sid, sent, t.strategy)
    assert "sent again" in t.log.read_text()


def test_broker_down_orders_still_answered_records_spool_and_land(private_redis: Any, schema_db: str,
                                                                  tmp_path: Path,
                                                                  stack_env: Callable[..., dict[str, str]],
                                                                  start_worker: Callable[..., Any]) -> None:
    """The broker is stopped while strategies trade: trades keep coming at once, records go to the
    gateway's spool, and once the broker is back every order, trade and position lands once."""
    sid = f"gbd-{uuid.uuid4().hex[:8]}"
    env = gateway_env(stack_env, schema_db, private_redis.url(), tmp_path)
    start_worker(env, queues="orders")
    t = Trading.start(env, tmp_path / "gateway.log", sid)
    spool = Path(env["TTQUANT_HOME"]) / "gateway-spool"
    try:
        wait_for(lambda: len(t.strategy.received) >= 10, timeout=90, what="first trades")
        assert private_redis.stop()
        answered_at_stop = len(t.strategy.received)
        wait_for(lambda: len(list(spool.glob("*.json"))) >= 10, timeout=60, what="records spooled")
        wait_for(lambda: len(t.strategy.received) >= answered_at_stop + 40, timeout=60,
                 what="orders answered while the broker is down")
        private_redis.start()
        t.strategy.sending.clear()
        sent = list(t.strategy.sent)
        wait_for(lambda: sent[-1] in t.answered(), timeout=60, what="every order answered")
        wait_for(lambda: len(trade_rows(schema_db, sid)) >= len(sent), timeout=120, what="every trade row")
        t.stop_gateway()
    finally:
        t.shut_down()
    assert_every_order_stored_once(schema_db, sid, sent, t.strategy)
    assert not list(spool.glob("*.json"))
