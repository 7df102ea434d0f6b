"""The order gateway end to end: ZMQ strategy clients -> gateway -> paper fills -> worker -> PostgreSQL."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import zmq

from tests.support.legacy_wire import legacy_order
from tests.support.services import free_port
from tests.support.stack import client_app
from tests.support.waiting import wait_for
from ttquant_tasks.bus.codec import Trade, decode_trade, encode_order, trade_quantity
from ttquant_tasks.bus.zmq import MarketDataPublisher
from ttquant_tasks.feed.stats import read_stats
from ttquant_tasks.gateway.exchanges.paper import PaperExchange
from ttquant_tasks.gateway.journal import Journal, journal_dir
from ttquant_tasks.gateway.positions import Position
from ttquant_tasks.gateway.risk import RiskLimits, limits_from_mapping
from ttquant_tasks.gateway.runner import Gateway
from ttquant_tasks.models import Tick
from ttquant_tasks.settings import Settings
from ttquant_tasks.status import render
from ttquant_tasks.storage.engine import get_engine
from ttquant_tasks.storage.orders import load_positions
from ttquant_tasks.tasks.orders import RecordPublisher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PERMISSIVE = {"positions": {"default_max": "1000"}}


def order(order_id: str, strategy_id: str, quantity: str, side: str = "BUY", price: float = 0.0,
          symbol: str = "BTCUSDT", timestamp: int | None = None) -> bytes:
    return encode_order(order_id=order_id, strategy_id=strategy_id, symbol=symbol, price=price, quantity=quantity,
                        side=side, timestamp=timestamp or time.time_ns())


class Strategy:
    """A strategy process's view: PUSH orders, SUB trades."""

    def __init__(self, settings: Settings) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(settings.zmq_pull_endpoint)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"trade.")
        self.sub.connect(settings.zmq_trade_endpoint)
        self.trades: dict[str, list[Trade]] = {}
        self.topics: dict[str, bytes] = {}

    def send(self, *frames: bytes) -> None:
        self.push.send_multipart(frames)

    def _drain(self) -> None:
        while self.sub.poll(50):
            topic, body = self.sub.recv_multipart()
            trade = decode_trade(body)
            self.trades.setdefault(trade.order_id, []).append(trade)
            self.topics[trade.order_id] = topic

    def wait(self, *order_ids: str) -> dict[str, list[Trade]]:
        def have() -> bool:
            self._drain()
            return all(o in self.trades for o in order_ids)

        wait_for(have, timeout=60, what=f"trades for {order_ids}")
        self._drain()
        return {o: self.trades[o] for o in order_ids}

    def warm_up(self) -> None:
        """PUB/SUB joins late: send answerable junk until an answer arrives (rows of 'warm-' ids)."""
        for i in range(600):
            oid = f"warm-{uuid.uuid4().hex[:8]}"
            self.send(b"\x0a" + bytes([len(oid)]) + oid.encode() + b"\xff")
            self._drain()
            if any(k.startswith("warm-") for k in self.trades):
                return
            time.sleep(0.05 if i < 100 else 0.2)
        raise AssertionError("no trade came back from the gateway")

    def close(self) -> None:
        self.push.close(0)
        self.sub.close(0)


@dataclasses.dataclass
class Running:
    gateway: Gateway
    strategy: Strategy
    md: MarketDataPublisher
    stop: threading.Event
    thread: threading.Thread

    def set_price(self, symbol: str, price: str) -> None:
        tick = Tick(exchange="paper", symbol=symbol, trade_id=1, price=price, qty="1",
                    exchange_time=time.time_ns(), local_time=time.time_ns())

        def seen() -> bool:
            self.md.send(tick)
            return self.gateway.service.last_prices.get(symbol) == Decimal(price)

        wait_for(seen, timeout=60, interval=0.05, what=f"gateway sees {symbol} at {price}")


def gateway_settings(tmp_path: Path, db_uri: str | None, broker_url: str | None) -> Settings:
    return Settings(db_uri=db_uri, broker_url=broker_url, home=tmp_path / f"home-{uuid.uuid4().hex[:6]}",
                    exchange="paper", zmq_pull_endpoint=f"tcp://127.0.0.1:{free_port()}",
                    zmq_trade_endpoint=f"tcp://127.0.0.1:{free_port()}", enqueue_queue_max=1000)


@contextlib.contextmanager
def running(settings: Settings, *, publish: Callable[[dict[str, Any]], None], limits: RiskLimits,
            restore: bool = True, **kwargs: Any) -> Iterator[Running]:
    md = MarketDataPublisher(f"tcp://127.0.0.1:{free_port()}")
    uri = settings.db_uri
    load = (lambda: load_positions(get_engine(uri))) if restore and uri else None
    gw = Gateway(settings, exchange=PaperExchange(commission_bps=Decimal(10)), limits=limits, publish=publish,
                 md_connect=md.endpoint, load_positions=load, retry_interval=0.2, **kwargs)
    stop = threading.Event()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(gw.run(stop)), daemon=True)
    thread.start()
    wait_for(gw.ready.is_set, timeout=60, what="gateway ready")
    strategy = Strategy(settings)
    try:
        strategy.warm_up()
        yield Running(gw, strategy, md, stop, thread)
    finally:
        strategy.close()
        stop.set()
        thread.join(30)
        md.close()
        assert not thread.is_alive(), "gateway did not stop"
        assert result, "gateway run() did not return"


def q(uri: str, sql: str, **params: Any) -> list[Any]:
    with get_engine(uri).connect() as conn:
        return list(conn.execute(sa.text(sql), params).all())


def rows_of(uri: str, strategy: str) -> tuple[list[Any], list[Any], list[Any]]:
    orders = q(uri, "SELECT order_id, status, volume FROM orders WHERE strategy_id = :s ORDER BY order_id", s=strategy)
    trades = q(uri, "SELECT order_id, status, filled_volume, filled_price, commission, realized_pnl, error_code "
                    "FROM trades WHERE strategy_id = :s ORDER BY trade_time, trade_id", s=strategy)
    positions = q(uri, "SELECT position, avg_price, realized_pnl, unrealized_pnl FROM positions "
                       "WHERE strategy_id = :s ORDER BY time", s=strategy)
    return orders, trades, positions


# ---------------------------------------------------------------- happy path + restart


def test_orders_trades_positions_land_once_and_restart_restores(
        schema_db: str, redis_url: str, tmp_path: Path, stack_env: Callable[..., dict[str, str]],
        start_worker: Callable[..., Any]) -> None:
    env = stack_env(schema_db, redis_url)
    start_worker(env)
    app = client_app(env)
    sid = f"s-{uuid.uuid4().hex[:8]}"
    settings = gateway_settings(tmp_path, schema_db, redis_url)
    publisher = RecordPublisher(app, timeout=2.0)
    with running(settings, publish=publisher, limits=limits_from_mapping(PERMISSIVE)) as gw:
        assert gw.gateway.restored is True
        gw.set_price("BTCUSDT", "100")
        gw.strategy.send(order(f"{sid}-1", sid, "0.5"))
        gw.strategy.send(legacy_order(f"{sid}-2", sid, "BTCUSDT", 1, "BUY", time.time_ns()))
        got = gw.strategy.wait(f"{sid}-1", f"{sid}-2")
        gw.set_price("BTCUSDT", "110")
        gw.strategy.send(order(f"{sid}-3", sid, "0.75", side="SELL", price=105.0))  # crosses: fills at 110
        got.update(gw.strategy.wait(f"{sid}-3"))
    assert [(t.status, trade_quantity(t), t.filled_price_str) for o in sorted(got) for t in got[o]] == [
        ("FILLED", "0.5", "100"), ("FILLED", "1", "100"), ("FILLED", "0.75", "110")]
    assert gw.strategy.topics[f"{sid}-3"] == b"trade.BTCUSDT.paper"

    def landed() -> bool:
        orders, trades, positions = rows_of(schema_db, sid)
        return len(positions) == 3 and len(trades) == 3 and all(o.status == "FILLED" for o in orders)

    wait_for(landed, timeout=90, what="3 orders FILLED, 3 trades, 3 positions")
    time.sleep(1.0)  # anything duplicated would have landed by now
    orders, trades, positions = rows_of(schema_db, sid)
    assert [(o.order_id, o.status, o.volume) for o in orders] == [
        (f"{sid}-1", "FILLED", Decimal("0.5")), (f"{sid}-2", "FILLED", Decimal("1")),
        (f"{sid}-3", "FILLED", Decimal("0.75"))]
    # fees 10 bps: 0.05, 0.1, 0.0825; the sell realizes (110 - 100) * 0.75 = 7.5
    assert [(t.filled_volume, t.commission, t.realized_pnl) for t in trades] == [
        (Decimal("0.5"), Decimal("0.05"), Decimal("-0.05")), (Decimal("1"), Decimal("0.1"), Decimal("-0.1")),
        (Decimal("0.75"), Decimal("0.0825"), Decimal("7.4175"))]
    assert positions[-1] == (Decimal("0.75"), Decimal("100"), Decimal("7.2675"), Decimal("7.5"))
    assert positions[0] == (Decimal("0.5"), Decimal("100"), Decimal("-0.05"), Decimal("0"))

    # Restart: a new gateway continues from the database.
    settings2 = gateway_settings(tmp_path, schema_db, redis_url)
    with running(settings2, publish=publisher, limits=limits_from_mapping(PERMISSIVE)) as gw2:
        assert gw2.gateway.restored is True
        assert gw2.gateway.service.position(sid, "BTCUSDT") == Position(
            sid, "BTCUSDT", Decimal("0.75"), Decimal("100"), Decimal("7.2675"), Decimal("0.2325"))
        gw2.set_price("BTCUSDT", "110")
        gw2.strategy.send(order(f"{sid}-4", sid, "0.75", side="SELL"))
        gw2.strategy.wait(f"{sid}-4")
    wait_for(lambda: len(rows_of(schema_db, sid)[2]) == 4, timeout=90, what="4th position row")
    # 7.2675 + 7.5 - 0.0825 fee; flat again
    assert rows_of(schema_db, sid)[2][-1] == (Decimal("0"), Decimal("0"), Decimal("14.685"), Decimal("0"))
    publisher.close()


# ---------------------------------------------------------------- risk rules and bad input


class Sink:
    """The gateway's ``publish``: keeps each payload, and the records in them (groups opened)."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []

    def __call__(self, payload: dict[str, Any]) -> None:
        self.payloads.append(payload)
        self.records.extend(payload["records"] if payload["kind"] == "group" else [payload])


RISK = {
    "orders": {"max_age_ms": 1000, "max_quantity": "5", "max_notional": "300"},
    "prices": {"min": "1", "max": "100000", "band_bps": 100},
    "rate": {"per_strategy_per_second": 2},
    "positions": {"max": {"BTCUSDT": "3"}},
}


def test_each_risk_rule_and_bad_input_answered_with_a_code(tmp_path: Path) -> None:
    now = time.time_ns()
    sink = Sink()
    settings = gateway_settings(tmp_path, None, None)
    # A frozen clock: the one-second rate window cannot expire under a slow machine.
    with running(settings, publish=sink, limits=limits_from_mapping(RISK), clock=lambda: now) as gw:
        gw.set_price("BTCUSDT", "100")
        cases = {
            "stale": (order("stale", "s", "1", timestamp=now - 2_000_000_000), 1003),
            "size": (order("size", "s", "6"), 1007),
            "noprice": (order("noprice", "s", "1", symbol="ETHUSDT"), 1010),
            "bounds": (order("bounds", "s", "1", price=0.5), 1004),
            "band": (order("band", "s", "1", price=102.0), 1005),
            "notional": (order("notional", "s", "4"), 1008),
            "invalid": (order("invalid", "s", "0", side="BUY"), 1009),
            "notfilled": (order("notfilled", "s", "1", price=99.5), 2002),
        }
        for data, _ in cases.values():
            gw.strategy.send(data)
        got = gw.strategy.wait(*cases)
        for oid, (_, code) in cases.items():
            (trade,) = got[oid]
            assert (trade.status, trade.error_code, bool(trade.error_message)) == ("REJECTED", code, True), oid
        assert got["noprice"][0].is_retryable and not got["size"][0].is_retryable

        # Position limit 3 and 2 orders/s per strategy, with fills in between.
        gw.strategy.send(order("p1", "pos", "2"))
        gw.strategy.wait("p1")
        gw.strategy.send(order("p2", "pos", "2"))
        assert gw.strategy.wait("p2")["p2"][0].error_code == 1002
        gw.strategy.send(order("r1", "rate", "1"))
        gw.strategy.send(order("r2", "rate", "1"))
        gw.strategy.send(order("r3", "rate", "1"))
        got = gw.strategy.wait("r1", "r2", "r3")
        assert [got[o][0].status for o in ("r1", "r2", "r3")] == ["FILLED", "FILLED", "REJECTED"]
        assert got["r3"][0].error_code == 1006 and got["r3"][0].is_retryable

        # Malformed bytes and frames: counted, answered when an id can be read, gateway keeps going.
        before = gw.gateway.service.counts["malformed"]
        gw.strategy.send(b"\xff\xfe garbage")
        gw.strategy.send(b"two", b"frames")
        gw.strategy.send(b"\x0a\x05bad-1\x12\xff")  # field 1 readable, field 2 truncated
        gw.strategy.send(legacy_order("legacy", "s", "BTCUSDT", 1, "SELL", now, price=99.5))
        got = gw.strategy.wait("bad-1", "legacy")
        assert got["bad-1"][0].error_code == 1009
        assert got["legacy"][0].status == "FILLED"  # short sale allowed: |position| 1 <= 3
        assert gw.gateway.service.counts["malformed"] == before + 3
        assert gw.thread.is_alive()
        # Its figures for `ttquant status` (another process), rewritten once a second while it runs.
        wait_for(lambda: (read_stats(settings.gateway_stats_path) or {}).get("counts", {}).get("malformed")
                 == before + 3, timeout=10, what="the gateway's stats file")
        counts = dict(gw.gateway.service.counts)
    final = read_stats(settings.gateway_stats_path)
    assert final is not None and final["counts"]["stopped"] is True  # the last write, at the stop
    assert {k: final["counts"][k] for k in ("orders", "filled", "rejected", "malformed")} == {
        k: counts[k] for k in ("orders", "filled", "rejected", "malformed")}
    assert counts["rejected"] > 0 and counts["filled"] > 0 and counts["malformed"] > 0
    screen = render({"time": final["time"] + 3, "database": "d", "broker": "b", "gateway": final})
    assert (f"gateway   stopped, updated 3s ago: {counts['orders']} orders, {counts['filled']} filled, "
            f"{counts['rejected']} rejected, {counts['malformed']} malformed; records ") in screen
    assert "journal ok" in screen
    kinds = [r["kind"] for r in sink.records]
    assert kinds.count("position") == 4  # p1, r1, r2, legacy
    # One payload per order: its NEW, fill, snapshot and final status travel as one group.
    (p1,) = [p for p in sink.payloads if p["kind"] == "group" and p["records"][0].get("order_id") == "p1"]
    assert [(r["kind"], r.get("status")) for r in p1["records"]] == [
        ("order", "NEW"), ("trade", "FILLED"), ("position", None), ("order", "FILLED")]
    statuses = {r["order_id"]: r["status"] for r in sink.records if r["kind"] == "order"}
    assert statuses["p2"] == "REJECTED" and statuses["legacy"] == "FILLED"
    assert "invalid" not in statuses  # invalid fields: no order row, only the REJECTED trade


# ---------------------------------------------------------------- database down


def test_database_down_trades_still_flow_rows_land_after(
        private_pg: Any, redis_url: str, tmp_path: Path, stack_env: Callable[..., dict[str, str]],
        start_worker: Callable[..., Any]) -> None:
    from ttquant_tasks.storage.migrate import init_db
    from ttquant_tasks.tasks.parking import flush, queue_depths

    uri = private_pg.url()
    init_db(uri, flavour="plain")
    env = stack_env(uri, redis_url)
    start_worker(env)
    app = client_app(env)
    publisher = RecordPublisher(app, timeout=2.0)
    sid = f"d-{uuid.uuid4().hex[:8]}"
    settings = gateway_settings(tmp_path, uri, redis_url)
    with running(settings, publish=publisher, limits=limits_from_mapping(PERMISSIVE)) as gw:
        gw.set_price("BTCUSDT", "100")
        assert private_pg.stop()
        ids = [f"{sid}-{i}" for i in range(5)]
        for oid in ids:
            gw.strategy.send(order(oid, sid, "0.1"))
        got = gw.strategy.wait(*ids)  # answered while the database is down
        assert all(got[o][0].status == "FILLED" for o in ids)
    private_pg.start()

    def landed() -> bool:
        if queue_depths(app, ("parked",))["parked"]:
            flush(app)
        orders, trades, positions = rows_of(uri, sid)
        return len(positions) == 5 and len(trades) == 5 and all(o.status == "FILLED" for o in orders)

    wait_for(landed, timeout=120, interval=1.0, what="rows after the database came back")
    time.sleep(1.0)
    orders, trades, positions = rows_of(uri, sid)
    assert len(orders) == 5 and len(trades) == 5 and len(positions) == 5
    assert positions[-1][:3] == (Decimal("0.5"), Decimal("100"), Decimal("-0.05"))
    publisher.close()


# ---------------------------------------------------------------- write-ahead journal


def test_unwritable_journal_rejects_orders_with_1011_and_keeps_serving(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    settings = gateway_settings(tmp_path, None, None)
    settings.home.mkdir(parents=True)
    blocker = journal_dir(settings.home)
    blocker.write_text("a file where the journal directory should be")
    with caplog.at_level(logging.ERROR), \
            running(settings, publish=sink, limits=limits_from_mapping(PERMISSIVE)) as gw:
        gw.set_price("BTCUSDT", "100")  # market data is still read
        gw.strategy.send(order("j1", "s", "1"))
        (trade,) = gw.strategy.wait("j1")["j1"]
        assert (trade.status, trade.error_code, trade.is_retryable) == ("REJECTED", 1011, True)
        assert str(blocker) in trade.error_message and "not executed" in trade.error_message
        assert gw.gateway.service.positions == {}  # never executed
        assert gw.gateway.stats()["journal_refused"] >= 1 and gw.thread.is_alive()
        blocker.unlink()  # the operator fixes it: orders go through again (journal retried every 5 s)
        n = iter(range(1000))

        def accepted() -> bool:
            oid = f"j-after-{next(n)}"
            gw.strategy.send(order(oid, "s", "0.1"))
            return gw.strategy.wait(oid)[oid][0].status == "FILLED"

        wait_for(accepted, timeout=60, interval=0.5, what="orders accepted once the journal is writable")
        assert gw.gateway.journal.healthy
    assert "JOURNAL UNAVAILABLE" in caplog.text and str(blocker) in caplog.text
    statuses = {r["order_id"]: r["status"] for r in sink.records if r["kind"] == "order"}
    assert statuses["j1"] == "REJECTED"
    assert any(r["kind"] == "trade" and r.get("error_code") == 1011 for r in sink.records)
    # records of orders accepted after the recovery are journaled: a clean stop handed them all over
    after = Journal(journal_dir(settings.home))
    assert after.open().to_replay == []
    after.close()


def test_start_replays_the_journal_before_serving_and_restores_its_positions(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, None, None)
    old = Journal(journal_dir(settings.home))
    old.open()
    new = {"kind": "order", "version": 1, "chunk_id": "order:o-1:NEW", "order_id": "o-1", "status": "NEW"}
    fill = {"kind": "trade", "version": 1, "chunk_id": "trade:t-1", "trade_id": "t-1", "order_id": "o-1"}
    snap = {"kind": "position", "version": 1, "chunk_id": "position:s:BTCUSDT:1", "strategy_id": "s",
            "symbol": "BTCUSDT", "position": "0.3", "avg_price": "100", "realized_pnl": "-0.03", "fees": "0.03",
            "time_ns": 1}
    for r in (new, fill, snap):
        old.append(r)
    # no close: as after a SIGKILL (the entries are in the page cache, nothing was handed over)
    sink = Sink()
    with running(settings, publish=sink, limits=limits_from_mapping(PERMISSIVE)) as gw:
        assert sink.records[:3] == [new, fill, snap]  # first, in journal order
        assert gw.gateway.service.position("s", "BTCUSDT") == Position(
            "s", "BTCUSDT", Decimal("0.3"), Decimal("100"), Decimal("-0.03"), Decimal("0.03"))
        gw.set_price("BTCUSDT", "100")
        gw.strategy.send(order("o-2", "s", "0.1"))
        assert gw.strategy.wait("o-2")["o-2"][0].status == "FILLED"
        assert gw.gateway.service.position("s", "BTCUSDT").quantity == Decimal("0.4")
    old.close()
    after = Journal(journal_dir(settings.home))
    assert after.open().to_replay == []  # all handed over at the stop
    after.close()
