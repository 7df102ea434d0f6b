"""The order writers (storage/orders.py) against a real PostgreSQL: semantics, and the connection
each process keeps open for them (backend killed, database unreachable, fork, engine disposal)."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from tests.support.tcpproxy import TcpProxy
from ttquant_tasks.errors import DatabaseUnavailable, PayloadError, PermanentError
from ttquant_tasks.storage import migrate, orders
from ttquant_tasks.storage.engine import make_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T0 = 1_732_540_000_000_000_000


@pytest.fixture(scope="module", params=["timescale", "plain"])
def db_uri(request: pytest.FixtureRequest, make_database: Callable[..., str]) -> str:
    uri = make_database(f"ow_{request.param}")
    if request.param == "timescale" and not migrate.timescale_installable(uri):
        pytest.skip("TimescaleDB is not installable on this PostgreSQL server")
    migrate.init_db(uri, "auto" if request.param == "timescale" else "plain")
    return uri


@pytest.fixture
def engine(db_uri: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_uri)
    yield eng
    eng.dispose()


@pytest.fixture
def sid() -> str:
    """A strategy id of this test alone (tests share the module database)."""
    return f"s-{uuid.uuid4().hex[:8]}"


def order(oid: str, sid: str, status: str = "NEW", updated_ns: int = T0 + 1000) -> dict[str, Any]:
    return {"kind": "order", "version": 1, "chunk_id": f"order:{oid}:{status}", "order_id": oid,
            "strategy_id": sid, "symbol": "BTCUSDT", "side": "BUY", "price": "0", "volume": "0.5",
            "timestamp": T0, "status": status, "time_ns": T0 + 500, "updated_ns": updated_ns}


def trade(tid: str, sid: str, **over: Any) -> dict[str, Any]:
    rec = {"kind": "trade", "version": 1, "chunk_id": f"trade:{tid}", "trade_id": tid, "order_id": "o-" + tid,
           "strategy_id": sid, "symbol": "BTCUSDT", "side": "BUY", "filled_price": "64321.12345678",
           "filled_volume": "0.5", "trade_time": T0 + 123_456_789, "status": "FILLED", "error_code": None,
           "error_message": None, "is_retryable": None, "commission": "0.032", "realized_pnl": "-0.032"}
    rec.update(over)
    return rec


def position(sid: str, time_ns: int) -> dict[str, Any]:
    return {"kind": "position", "version": 1, "chunk_id": f"position:{sid}:BTCUSDT:{time_ns}",
            "strategy_id": sid, "symbol": "BTCUSDT", "position": "0.5", "avg_price": "100",
            "unrealized_pnl": "0", "realized_pnl": "-0.05", "time_ns": time_ns}


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).all())


def writer_pid(engine: sa.Engine) -> int:
    """Backend pid of this process's order-writer connection (white box: one per process and engine)."""
    return int(orders._links[engine].conn.get_backend_pid())


def terminate_writers(engine: sa.Engine) -> int:
    """Kill every other ttquant backend of this test's own database (the writer's included)."""
    got = rows(engine, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname ="
                       " current_database() AND application_name = 'ttquant-tasks' AND pid <> pg_backend_pid()")
    return int(got[0][0])


def test_order_status_moves_forward_only(engine: sa.Engine, sid: str) -> None:
    oid = f"{sid}-o1"
    assert orders.upsert_order(engine, order(oid, sid, "NEW")) == 1
    assert orders.upsert_order(engine, order(oid, sid, "NEW")) == 0
    assert orders.upsert_order(engine, order(oid, sid, "FILLED", updated_ns=T0 + 9000)) == 1
    assert orders.upsert_order(engine, order(oid, sid, "PARTIALLY_FILLED", updated_ns=T0 + 99_000)) == 0
    assert orders.upsert_order(engine, order(oid, sid, "REJECTED", updated_ns=T0 + 99_000)) == 0
    got = rows(engine, "SELECT status, updated_at, time, price, volume, timestamp FROM orders WHERE order_id = :o",
               o=oid)
    assert len(got) == 1
    status, updated_at, t, price, volume, timestamp = got[0]
    assert status == "FILLED" and updated_at == orders.ns_to_datetime(T0 + 9000)
    assert t == orders.ns_to_datetime(T0 + 500) and str(price) == "0" and str(volume) == "0.5"
    assert timestamp == T0


def test_trades_and_positions_stored_once_exactly(engine: sa.Engine, sid: str) -> None:
    tid = f"{sid}-t1"
    assert orders.insert_trade(engine, trade(tid, sid)) == 1
    assert orders.insert_trade(engine, trade(tid, sid, filled_volume="9")) == 0
    rej = trade(f"{sid}-t2", sid, status="REJECTED", filled_price=None, filled_volume=None, error_code=1003,
                error_message="over limit", is_retryable=False, commission="0", realized_pnl=None)
    assert orders.insert_trade(engine, rej) == 1
    got = rows(engine, "SELECT trade_id, filled_price, filled_volume, error_code, is_retryable, time, trade_time"
                       " FROM trades WHERE strategy_id = :s ORDER BY trade_id", s=sid)
    assert [(r[0], str(r[1]), str(r[2]), r[3], r[4]) for r in got] == [
        (tid, "64321.12345678", "0.5", None, None), (f"{sid}-t2", "None", "None", 1003, False)]
    assert got[0][5] == orders.ns_to_datetime(T0 + 123_456_789) and got[0][6] == T0 + 123_456_789
    assert orders.insert_position(engine, position(sid, T0)) == 1
    assert orders.insert_position(engine, position(sid, T0)) == 0
    assert orders.insert_position(engine, position(sid, T0 + 1000)) == 1
    assert len(rows(engine, "SELECT 1 FROM positions WHERE strategy_id = :s", s=sid)) == 2


def test_bad_data_is_permanent_and_keeps_the_connection(engine: sa.Engine, sid: str) -> None:
    assert orders.insert_trade(engine, trade(f"{sid}-ok", sid)) == 1
    pid = writer_pid(engine)
    with pytest.raises(PermanentError, match="insert_trade"):  # error_code is an int4 column
        orders.insert_trade(engine, trade(f"{sid}-big", sid, error_code=2**40))
    with pytest.raises(PayloadError):
        orders.upsert_order(engine, {**order(f"{sid}-x", sid), "status": "CANCELLED"})
    assert orders.insert_trade(engine, trade(f"{sid}-ok2", sid)) == 1
    assert writer_pid(engine) == pid  # autocommit: nothing to roll back, the connection stays


def group(*records: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "group", "version": 1, "chunk_id": f"group:{records[0]['chunk_id']}+{len(records)}",
            "records": list(records)}


def stored(engine: sa.Engine, sid: str) -> tuple[list[Any], int, int]:
    return (rows(engine, "SELECT order_id, status FROM orders WHERE strategy_id = :s ORDER BY order_id", s=sid),
            len(rows(engine, "SELECT 1 FROM trades WHERE strategy_id = :s", s=sid)),
            len(rows(engine, "SELECT 1 FROM positions WHERE strategy_id = :s", s=sid)))


def test_a_group_is_written_in_one_transaction_once(engine: sa.Engine, sid: str) -> None:
    oid = f"{sid}-g1"
    payload = group(order(oid, sid), trade(f"{sid}-gt", sid, order_id=oid), position(sid, T0),
                    order(oid, sid, "FILLED", updated_ns=T0 + 9000))
    assert orders.write_group(engine, payload) == 4  # NEW inserted, trade, snapshot, status moved to FILLED
    assert stored(engine, sid) == ([(oid, "FILLED")], 1, 1)
    pid = writer_pid(engine)
    assert orders.write_group(engine, payload) == 0  # a redelivery changes nothing
    assert stored(engine, sid) == ([(oid, "FILLED")], 1, 1)
    assert writer_pid(engine) == pid
    # One transaction: every row it wrote carries the same xmin.
    orders.write_group(engine, group(order(f"{sid}-g2", sid), trade(f"{sid}-g2t", sid), position(sid, T0 + 7000)))
    xmins = rows(engine, "SELECT xmin::text FROM orders WHERE order_id = :o UNION ALL SELECT xmin::text FROM trades"
                         " WHERE trade_id = :t UNION ALL SELECT xmin::text FROM positions WHERE strategy_id = :s"
                         " AND time = :time", o=f"{sid}-g2", t=f"{sid}-g2t", s=sid,
                 time=orders.ns_to_datetime(T0 + 7000))
    assert len(xmins) == 3 and len(set(xmins)) == 1, xmins


def test_a_group_is_all_or_nothing(engine: sa.Engine, sid: str) -> None:
    oid = f"{sid}-g1"
    with pytest.raises(PayloadError, match=r"record 2: .*'status'"):  # refused before anything is written
        orders.write_group(engine, group(order(oid, sid), trade(f"{sid}-t", sid), {**order(oid, sid), "status": "X"}))
    with pytest.raises(PayloadError, match="record 1: field 'kind'"):
        orders.write_group(engine, group(order(oid, sid), {"kind": "fill"}))
    with pytest.raises(PayloadError, match="non-empty list"):
        orders.write_group(engine, {"kind": "group", "version": 1, "chunk_id": "g", "records": []})
    assert orders.insert_position(engine, position(f"{sid}-other", T0)) == 1  # the connection is open now
    pid = writer_pid(engine)
    with pytest.raises(PermanentError, match="write_group"):  # the database refuses the third record
        orders.write_group(engine, group(order(oid, sid), trade(f"{sid}-t", sid), trade(f"{sid}-big", sid,
                                                                                         error_code=2**40)))
    assert stored(engine, sid) == ([], 0, 0), "the records before the bad one were rolled back"
    assert writer_pid(engine) == pid  # rolled back, the connection stays usable
    assert orders.write_group(engine, group(order(oid, sid), trade(f"{sid}-t", sid))) == 2
    assert stored(engine, sid) == ([(oid, "NEW")], 1, 0)


def test_backend_killed_between_writes(engine: sa.Engine, sid: str) -> None:
    """The server ends the writer's session (restart, failover, admin): no error, no loss, no duplicate."""
    assert orders.upsert_order(engine, order(f"{sid}-1", sid)) == 1
    old = writer_pid(engine)
    assert terminate_writers(engine) >= 1
    try:
        assert orders.upsert_order(engine, order(f"{sid}-2", sid)) == 1  # re-sent on a new connection
    except DatabaseUnavailable:  # also acceptable: the task retries it
        assert orders.upsert_order(engine, order(f"{sid}-2", sid)) == 1
    assert writer_pid(engine) != old
    assert orders.upsert_order(engine, order(f"{sid}-3", sid)) == 1
    assert orders.upsert_order(engine, order(f"{sid}-2", sid)) == 0
    got = rows(engine, "SELECT order_id, count(*) FROM orders WHERE strategy_id = :s GROUP BY order_id"
                       " ORDER BY order_id", s=sid)
    assert got == [(f"{sid}-1", 1), (f"{sid}-2", 1), (f"{sid}-3", 1)]


def test_connection_opened_at_worker_start_and_killed_before_the_first_write(engine: sa.Engine, sid: str) -> None:
    orders.open_connection(engine)  # as the orders worker's warm-up does
    old = writer_pid(engine)
    assert terminate_writers(engine) >= 1
    assert orders.insert_position(engine, position(sid, T0)) == 1  # re-sent on a new connection, no error
    assert writer_pid(engine) != old


def test_database_unreachable_raises_then_recovers(db_uri: str, sid: str) -> None:
    """Connection cut and new connections refused: DatabaseUnavailable (the task retries), never a
    crash on the dead connection; once the database answers again the same engine writes."""
    parts = urlsplit(db_uri)
    proxy = TcpProxy(parts.port or 5432, parts.hostname or "127.0.0.1")
    eng = make_engine(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl())
    try:
        assert orders.insert_position(eng, position(sid, T0)) == 1
        proxy.set_mode("refuse")  # drops the live connection too
        for attempt in range(3):
            with pytest.raises(DatabaseUnavailable) as info:
                orders.insert_position(eng, position(sid, T0 + (attempt + 1) * 1000))
            assert info.value.__cause__ is not None
        proxy.set_mode("forward")
        assert orders.insert_position(eng, position(sid, T0 + 1000)) == 1
        assert orders.insert_position(eng, position(sid, T0)) == 0
        assert len(rows(eng, "SELECT 1 FROM positions WHERE strategy_id = :s", s=sid)) == 2
    finally:
        eng.dispose()
        proxy.close()


def _child_write(engine: sa.Engine, sid: str, out: Any) -> None:
    try:
        out.put((orders.upsert_order(engine, order(f"{sid}-child", sid)), writer_pid(engine)))
    except BaseException as exc:  # report, do not hang the parent
        out.put((repr(exc), 0))


def test_forked_child_opens_its_own_connection(engine: sa.Engine, sid: str) -> None:
    assert orders.upsert_order(engine, order(f"{sid}-parent", sid)) == 1
    parent_backend = writer_pid(engine)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_write, args=(engine, sid, out))
    child.start()
    written, child_backend = out.get(timeout=60)
    child.join(30)
    assert child.exitcode == 0 and written == 1
    assert child_backend != parent_backend
    # The child neither used nor closed the parent's session.
    assert writer_pid(engine) == parent_backend
    assert orders.upsert_order(engine, order(f"{sid}-after", sid)) == 1
    assert writer_pid(engine) == parent_backend


def test_dispose_closes_the_connection_and_the_engine_still_writes(engine: sa.Engine, sid: str) -> None:
    assert orders.insert_trade(engine, trade(f"{sid}-a", sid)) == 1
    conn, backend = orders._links[engine].conn, writer_pid(engine)
    engine.dispose()
    assert conn.closed and engine not in orders._links
    assert orders.insert_trade(engine, trade(f"{sid}-b", sid)) == 1
    assert orders._links[engine].conn is not conn
    deadline = time.monotonic() + 10  # the session really ended on the server
    while rows(engine, "SELECT 1 FROM pg_stat_activity WHERE pid = :p", p=backend):
        assert time.monotonic() < deadline, "disposed writer connection still open on the server"
        time.sleep(0.1)
