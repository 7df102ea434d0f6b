"""End-to-end confirmation (feed/confirm.py, storage/receipts.py) against a real PostgreSQL, both flavours.

The "broker" here is a function that writes a payload with the real writers, or drops it (what a
restarted volatile Redis does); the database side is real.  The whole stack with a real broker
losing messages is tests/faults/test_broker_loss.py.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.checks import make_ticks
from tests.support.stack import flavoured_engine
from tests.support.waiting import wait_for
from ttquant_tasks.errors import DatabaseUnavailable
from ttquant_tasks.feed.confirm import Confirmer, Outbox, tick_keys
from ttquant_tasks.gateway.orders import Fill, OrderRequest
from ttquant_tasks.gateway.positions import Position
from ttquant_tasks.gateway.records import fill_record, order_record, position_record
from ttquant_tasks.models import chunk_payload, payload_rows
from ttquant_tasks.storage.engine import make_engine
from ttquant_tasks.storage.orders import insert_position, insert_trade, upsert_order
from ttquant_tasks.storage.queries import tick_ids
from ttquant_tasks.storage.receipts import record_key, stored_records, stored_ticks
from ttquant_tasks.storage.writers import insert_ticks

pytestmark = pytest.mark.integration

_ids = itertools.count(1)


@pytest.fixture(scope="module", params=["timescale", "plain"])
def engine(request: pytest.FixtureRequest, make_database: Callable[..., str]) -> Iterator[sa.Engine]:
    yield from flavoured_engine(request, make_database, "cf")


def chunks(exchange: str, n: int, size: int = 50) -> list[dict[str, Any]]:
    ticks = make_ticks(exchange, "BTCUSDT", 1, n * size)
    return [chunk_payload(exchange, ticks[i:i + size]) for i in range(0, n * size, size)]


def exchange_name() -> str:
    return f"cf{next(_ids)}x{uuid.uuid4().hex[:6]}"


class LossyBroker:
    """Writes each published payload at once with the real writer, except those it is told to lose."""

    def __init__(self, engine: sa.Engine, lose: set[str]) -> None:
        self.engine, self.lose = engine, lose
        self.published: list[str] = []

    def __call__(self, payload: dict[str, Any]) -> None:
        self.published.append(payload["chunk_id"])
        if payload["chunk_id"] in self.lose:
            self.lose.discard(payload["chunk_id"])  # lost once; a resend goes through
            return
        insert_ticks(self.engine, list(payload_rows(payload)))


def confirmer(engine: sa.Engine, publish: Callable[[dict[str, Any]], None], outbox: Outbox | None,
              backlog: Callable[[], int | None] = lambda: 0, **kw: Any) -> Confirmer:
    options: dict[str, Any] = {"check_after": 0.2, "resend_after": 0.5, "interval": 0.1}
    options.update(kw)
    return Confirmer(publish, keys=tick_keys, stored=lambda keys: stored_ticks(engine, keys), backlog=backlog,
                     outbox=outbox, **options)


def test_stored_ticks_names_exactly_the_stored_keys(engine: sa.Engine) -> None:
    ex = exchange_name()
    written, missing = chunks(ex, 2)
    insert_ticks(engine, list(payload_rows(written)))
    keys = [*tick_keys(written), *tick_keys(missing)]
    assert stored_ticks(engine, keys) == set(tick_keys(written))
    assert stored_ticks(engine, []) == set()
    # Same trade id at another time is another trade: not confirmed by this one.
    ex_, sym, tid, et = tick_keys(written)[0]  # type: ignore[misc]
    assert stored_ticks(engine, [(ex_, sym, tid, et + 1000)]) == set()


def test_lost_chunks_are_resent_and_stored_once(engine: sa.Engine, tmp_path: Path) -> None:
    ex = exchange_name()
    payloads = chunks(ex, 6)
    broker = LossyBroker(engine, {payloads[1]["chunk_id"], payloads[4]["chunk_id"]})
    c = confirmer(engine, broker, Outbox(tmp_path / "outbox"))
    try:
        for p in payloads:
            c(p)
        wait_for(lambda: c.stats()["pending"] == 0, timeout=30, what="every chunk confirmed")
    finally:
        c.close()
    assert tick_ids(engine, ex, "BTCUSDT") == list(range(1, 301))
    stats = c.stats()
    assert stats["resent"] == 2 and stats["confirmed"] == 6 and stats["given_up"] == 0
    assert broker.published.count(payloads[1]["chunk_id"]) == 2


def test_no_resend_while_the_broker_holds_a_backlog(engine: sa.Engine) -> None:
    ex = exchange_name()
    payloads = chunks(ex, 2)
    broker = LossyBroker(engine, {payloads[0]["chunk_id"]})
    backlog = {"n": 3}
    c = confirmer(engine, broker, None, backlog=lambda: backlog["n"])
    try:
        for p in payloads:
            c(p)
        time.sleep(1.5)  # several turns past resend_after: a backlog holds the resend back
        assert c.stats()["resent"] == 0 and c.stats()["pending"] == 1
        backlog["n"] = None  # type: ignore[assignment]  # cannot tell: still no resend
        time.sleep(0.5)
        assert c.stats()["resent"] == 0
        backlog["n"] = 0
        wait_for(lambda: c.stats()["pending"] == 0, timeout=30, what="the lost chunk resent once the queue is empty")
    finally:
        c.close()
    assert len(tick_ids(engine, ex, "BTCUSDT")) == 100


def test_database_down_holds_everything_and_resends_nothing(engine: sa.Engine) -> None:
    ex = exchange_name()
    payloads = chunks(ex, 3)
    published: list[str] = []
    down = {"yes": True}

    def stored(keys: list[Any]) -> set[Any]:
        if down["yes"]:
            raise DatabaseUnavailable("database down (test)")
        return stored_ticks(engine, keys)

    def publish(p: dict[str, Any]) -> None:
        published.append(p["chunk_id"])

    c = Confirmer(publish, keys=tick_keys, stored=stored, backlog=lambda: 0, outbox=None,
                  check_after=0.1, resend_after=0.2, interval=0.05)
    try:
        for p in payloads:
            c(p)
        time.sleep(1.0)
        assert len(published) == 3 and c.stats()["pending"] == 3  # nothing resent blind
        for p in payloads:
            insert_ticks(engine, list(payload_rows(p)))
        down["yes"] = False
        wait_for(lambda: c.stats()["pending"] == 0, timeout=30, what="confirmation once the database is back")
    finally:
        c.close()
    assert c.stats()["resent"] == 0 and len(published) == 3


def test_gives_up_after_max_resends(engine: sa.Engine) -> None:
    ex = exchange_name()
    payload = chunks(ex, 1)[0]
    sent: list[str] = []
    c = confirmer(engine, lambda p: sent.append(p["chunk_id"]), None, max_resends=2)
    try:
        c(payload)
        wait_for(lambda: c.stats()["given_up"] == 1, timeout=30, what="the chunk given up")
    finally:
        c.close()
    assert len(sent) == 3 and c.stats()["pending"] == 0


def test_memory_bound_spills_to_the_outbox_and_a_restart_resends_from_it(engine: sa.Engine, tmp_path: Path) -> None:
    ex = exchange_name()
    payloads = chunks(ex, 8)
    outbox_dir = tmp_path / "outbox"
    # Nothing reaches the database: the first run only publishes (into the void) and keeps the rest.
    first = confirmer(engine, lambda p: None, Outbox(outbox_dir), memory_rows=120, resend_after=3600)
    try:
        for p in payloads:
            first(p)
        wait_for(lambda: first.stats()["memory_rows"] <= 120, timeout=30, what="payloads spilled over the bound")
        assert first.stats()["spilled"] >= 6 and first.stats()["pending"] == 8
    finally:
        first.close()
    assert len(Outbox(outbox_dir)) == 8  # close saved the rest too

    broker = LossyBroker(engine, set())
    second = confirmer(engine, broker, Outbox(outbox_dir))
    try:
        wait_for(lambda: second.stats()["pending"] == 0, timeout=30, what="the earlier run's chunks resent")
    finally:
        second.close()
    assert tick_ids(engine, ex, "BTCUSDT") == list(range(1, 401))
    assert second.stats()["resent"] == 8 and len(Outbox(outbox_dir)) == 0


def test_outbox_chunks_already_stored_are_only_confirmed(engine: sa.Engine, tmp_path: Path) -> None:
    ex = exchange_name()
    payloads = chunks(ex, 3)
    outbox = Outbox(tmp_path / "outbox")
    for p in payloads:
        outbox.append(p)
        insert_ticks(engine, list(payload_rows(p)))
    sent: list[str] = []
    c = confirmer(engine, lambda p: sent.append(p["chunk_id"]), Outbox(tmp_path / "outbox"))
    try:
        wait_for(lambda: c.stats()["confirmed"] == 3, timeout=30, what="stored outbox chunks confirmed")
    finally:
        c.close()
    assert sent == [] and len(Outbox(tmp_path / "outbox")) == 0


def test_stored_records_follow_orders_trades_and_positions(engine: sa.Engine) -> None:
    tag = uuid.uuid4().hex[:8]
    now = time.time_ns()
    order = OrderRequest(order_id=f"o-{tag}", strategy_id="s1", symbol="BTCUSDT", side="BUY", price=Decimal(0),
                         quantity=Decimal("0.5"), timestamp_ns=now)
    new, filled = order_record(order, "NEW", now, now), order_record(order, "FILLED", now, now + 1000)
    fill = Fill(trade_id=f"t-{tag}", order_id=order.order_id, strategy_id="s1", symbol="BTCUSDT", side="BUY",
                price=Decimal("64000.5"), quantity=Decimal("0.5"), commission=Decimal("0.01"), time_ns=now)
    trade = fill_record(fill, Decimal(0))
    position = position_record(Position("s1", f"P{tag}", Decimal("0.5"), Decimal("64000.5")), Decimal("64001"),
                               now + 123_456)  # sub-microsecond digits: stored truncated
    records = [new, filled, trade, position]
    keys = [k for r in records for k in record_key(r)]
    assert stored_records(engine, keys) == set()
    upsert_order(engine, new)
    assert stored_records(engine, keys) == set(record_key(new))  # NEW stored, FILLED not yet
    upsert_order(engine, filled)
    insert_trade(engine, trade)
    insert_position(engine, position)
    assert stored_records(engine, keys) == set(keys)


def test_unreachable_database_raises_database_unavailable(tmp_path: Path) -> None:
    from tests.support.services import free_port

    eng = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        with pytest.raises(DatabaseUnavailable):
            stored_ticks(eng, [("x", "BTCUSDT", 1, 1)])
        with pytest.raises(DatabaseUnavailable):
            stored_records(eng, [("trade", "t-1")])
    finally:
        eng.dispose()
