"""insert_ticks, insert_dead_letter and the queries against a real PostgreSQL, in both flavours."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tests.support.services import free_port
from tests.support.stack import flavoured_engine
from ttquant_tasks.errors import DatabaseUnavailable, PayloadError, PermanentError
from ttquant_tasks.models import Tick, chunk_payload
from ttquant_tasks.storage import migrate, queries
from ttquant_tasks.storage.engine import make_engine
from ttquant_tasks.storage.writers import insert_dead_letter, insert_payload, insert_ticks

pytestmark = pytest.mark.integration

DAY_NS = 86_400 * 10**9
NOW_NS = int(dt.datetime.now(dt.UTC).timestamp()) * 10**9


def ticks(ids: range | list[int], symbol: str = "BTCUSDT", exchange: str = "binance",
          t0: int = NOW_NS, step_ns: int = 1_000_000) -> list[Tick]:
    """Consecutive trades one millisecond apart (or at ``t0`` for all when step_ns=0)."""
    return [Tick(exchange, symbol, i, f"{60000 + i}.5", "0.001", t0 + i * step_ns, t0 + i * step_ns + 777, i % 2 == 0)
            for i in ids]


@pytest.fixture(scope="module", params=["timescale", "plain"])
def engine(request: pytest.FixtureRequest, make_database: Callable[..., str]) -> Iterator[sa.Engine]:
    yield from flavoured_engine(request, make_database, "st")


@pytest.fixture
def symbol(request: pytest.FixtureRequest) -> str:
    """A symbol of this test alone, so tests sharing the module database do not see each other."""
    return "S" + str(abs(hash(request.node.nodeid)) % 10**8)


def test_new_rows_counted_and_repeat_inserts_nothing(engine: sa.Engine, symbol: str) -> None:
    chunk = ticks(range(1, 101), symbol)
    assert insert_ticks(engine, chunk) == 100
    assert insert_ticks(engine, chunk) == 0
    assert queries.tick_ids(engine, "binance", symbol) == list(range(1, 101))


def test_overlapping_chunk_inserts_only_new(engine: sa.Engine, symbol: str) -> None:
    assert insert_ticks(engine, ticks(range(1, 51), symbol)) == 50
    assert insert_ticks(engine, ticks(range(41, 71), symbol)) == 20
    assert queries.tick_ids(engine, "binance", symbol) == list(range(1, 71))
    assert queries.last_trade_ids(engine, "binance", [symbol, "NOSUCH"]) == {symbol: 70}


def test_distinct_trades_sharing_a_timestamp_are_all_kept(engine: sa.Engine, symbol: str) -> None:
    assert insert_ticks(engine, ticks([7, 8, 9], symbol, step_ns=0)) == 3
    assert queries.tick_ids(engine, "binance", symbol) == [7, 8, 9]


def test_duplicates_inside_one_chunk_stored_once(engine: sa.Engine, symbol: str) -> None:
    chunk = ticks([1, 2, 3], symbol)
    assert insert_ticks(engine, chunk + chunk[:2]) == 3


def test_exact_decimals_times_and_nulls_round_trip(engine: sa.Engine, symbol: str) -> None:
    et = 1_732_540_000_123_456_789
    t = Tick("binance", symbol, 42, "64321.12345678", "0.00012345", et, et + 5, None)
    assert insert_ticks(engine, [t]) == 1
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT last_price::text, volume::text, time, exchange_time, local_time, buyer_maker"
            " FROM market_data WHERE symbol = :s"), {"s": symbol}).one()
    assert row.last_price == "64321.12345678" and row.volume == "0.00012345"
    assert row.exchange_time == et and row.local_time == et + 5 and row.buyer_maker is None
    # time = exchange time, truncated (not rounded) to the microsecond
    assert row.time == dt.datetime(2024, 11, 25, 13, 6, 40, 123456, tzinfo=dt.UTC)


def test_awkward_symbol_text_survives_csv(engine: sa.Engine) -> None:
    odd = 'A,"B"\nC'
    assert insert_ticks(engine, ticks([1], odd)) == 1
    assert queries.tick_ids(engine, "binance", odd) == [1]


def test_backfill_into_an_old_day(engine: sa.Engine, symbol: str) -> None:
    old = NOW_NS - 400 * DAY_NS
    assert insert_ticks(engine, ticks(range(1, 11), symbol, t0=old)) == 10
    assert insert_ticks(engine, ticks(range(1, 11), symbol, t0=old)) == 0
    assert queries.tick_ids(engine, "binance", symbol) == list(range(1, 11))
    if migrate.flavour(engine) == "plain":
        day = (dt.datetime.fromtimestamp(old // 10**9, dt.UTC)).strftime("%Y%m%d")
        with engine.connect() as conn:
            n = conn.execute(sa.text(f"SELECT count(*) FROM market_data_p{day} WHERE symbol = :s"),
                             {"s": symbol}).scalar_one()
            in_default = conn.execute(sa.text("SELECT count(*) FROM market_data_default")).scalar_one()
        assert n == 10 and in_default == 0  # in the day's own (droppable) partition


def test_one_chunk_over_distant_days_gets_exactly_those_days(engine: sa.Engine, symbol: str) -> None:
    # Two days 300 days apart (a backfill mixed with live ticks) and the last nanosecond of a day:
    # each row lands in its own day's partition, and no partition is made for the days between.
    far = (NOW_NS - 700 * DAY_NS) // DAY_NS * DAY_NS  # midnight UTC
    rows = ticks([1, 2], symbol, t0=far + DAY_NS - 1, step_ns=0) + ticks([3], symbol, t0=far + 300 * DAY_NS)
    assert insert_ticks(engine, rows) == 3
    assert queries.tick_ids(engine, "binance", symbol) == [1, 2, 3]
    if migrate.flavour(engine) == "plain":
        def day(ns: int) -> str:
            return dt.datetime.fromtimestamp(ns // 10**9, dt.UTC).strftime("%Y%m%d")

        with engine.connect() as conn:
            parts = set(conn.execute(sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'market_data'::regclass")).scalars())
            counts = {d: conn.execute(sa.text(f"SELECT count(*) FROM market_data_p{d} WHERE symbol = :s"),
                                      {"s": symbol}).scalar_one() for d in (day(far), day(far + 300 * DAY_NS))}
        assert counts == {day(far): 2, day(far + 300 * DAY_NS): 1}
        assert f"market_data_p{day(far + DAY_NS)}" not in parts  # the day after: nothing for it


def test_payload_stored_alike_on_either_validation_path(engine: sa.Engine, symbol: str) -> None:
    plain = chunk_payload("binance", ticks(range(1, 4), symbol))
    other = chunk_payload("binance", ticks(range(4, 6), symbol))
    other["price"] = ["1E+2", "0.5e1"]  # valid decimals, not in the common form: the per-value path
    assert insert_payload(engine, plain) == 3
    assert insert_payload(engine, other) == 2
    assert insert_payload(engine, plain) == 0  # idempotent as insert_ticks
    with engine.connect() as conn:
        prices = conn.execute(sa.text("SELECT trade_id, last_price FROM market_data WHERE symbol = :s ORDER BY 1"),
                              {"s": symbol}).all()
    assert prices == [(1, Decimal("60001.5")), (2, Decimal("60002.5")), (3, Decimal("60003.5")),
                      (4, Decimal("100")), (5, Decimal("5"))]
    bad = chunk_payload("binance", ticks(range(6, 8), symbol))
    bad["qty"] = ["0.1", "-2"]
    with pytest.raises(PayloadError, match=r"qty\[1\]"):
        insert_payload(engine, bad)
    assert queries.tick_ids(engine, "binance", symbol) == [1, 2, 3, 4, 5]  # nothing of the bad chunk


def test_insert_into_compressed_chunk(engine: sa.Engine, symbol: str) -> None:
    if migrate.flavour(engine) != "timescale":
        pytest.skip("TimescaleDB flavour only")
    old = NOW_NS - 10 * DAY_NS
    assert insert_ticks(engine, ticks(range(1, 21), symbol, t0=old)) == 20
    with engine.begin() as conn:
        conn.execute(sa.text(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('market_data',"
            " older_than => now() - interval '8 days', newer_than => now() - interval '12 days') c"))
    assert insert_ticks(engine, ticks(range(11, 26), symbol, t0=old)) == 5
    assert queries.tick_ids(engine, "binance", symbol) == list(range(1, 26))


def test_concurrent_overlapping_writers_store_each_trade_once(engine: sa.Engine, symbol: str) -> None:
    old = NOW_NS - 1000 * DAY_NS  # a day without a partition yet: plain writers race to create it
    results: list[int] = []
    errors: list[BaseException] = []

    def write(start: int) -> None:
        try:
            for k in range(5):
                chunk = ticks(range(start + 20 * k, start + 20 * k + 40), symbol, t0=old)
                results.append(insert_ticks(engine, chunk))
        except BaseException as exc:  # reported below; a thread must not swallow it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in (1, 11, 21)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    stored = queries.tick_ids(engine, "binance", symbol)
    assert stored == list(range(1, 141))
    assert sum(results) == len(stored)


def test_queries_see_duplicates_and_sizes(engine: sa.Engine, symbol: str) -> None:
    before = queries.duplicate_ticks(engine)
    # the same trade id at two different times is not the same natural key: the audit must see it
    insert_ticks(engine, ticks([5], symbol) + ticks([5], symbol, t0=NOW_NS + 10**9))
    assert queries.duplicate_ticks(engine) == before + 1
    counts = queries.table_counts(engine)
    assert counts["market_data"] >= 2 and counts["orders"] == 0
    assert queries.db_size(engine) > 1_000_000


def test_bad_value_is_permanent_and_leaves_the_pool_usable(engine: sa.Engine, symbol: str) -> None:
    bad = Tick("binance", symbol, 1, "not-a-number", "1", NOW_NS, NOW_NS)
    with pytest.raises(PermanentError, match="insert_ticks"):
        insert_ticks(engine, ticks([1], symbol) + [bad])
    assert queries.tick_ids(engine, "binance", symbol) == []  # the good row went with the bad one
    assert insert_ticks(engine, ticks([1], symbol)) == 1


def test_out_of_range_value_is_permanent(engine: sa.Engine, symbol: str) -> None:
    bad = Tick("binance", symbol, 2**63, "1", "1", NOW_NS, NOW_NS)
    with pytest.raises(PermanentError):
        insert_ticks(engine, [bad])


def test_dead_letter_keeps_awkward_payloads(engine: sa.Engine) -> None:
    payload = {"v": 1, "text": "nul\x00here", "obj": object(), "dec": Decimal("1.5")}
    insert_dead_letter(engine, "ttquant.write_ticks", "bad\x00reason", payload)
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT task, reason, payload FROM dead_letters ORDER BY id DESC LIMIT 1")).one()
    assert row.task == "ttquant.write_ticks" and row.reason == "bad\ufffdreason"
    assert row.payload["v"] == 1 and row.payload["text"] == "nul\ufffdhere"
    assert row.payload["dec"] == "Decimal('1.5')"


def test_unreachable_database_is_retryable() -> None:
    eng = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            insert_ticks(eng, ticks([1]))
        assert info.value.__cause__ is not None
        # The connection comes before any work on the chunk: with the database away even a chunk
        # that would fail validation is an outage (retried, then parked; validated on replay).
        bad = chunk_payload("binance", ticks([1, 2], "BTCUSDT"))
        bad["qty"] = ["0.1", "-2"]
        with pytest.raises(DatabaseUnavailable):
            insert_payload(eng, bad)
        with pytest.raises(DatabaseUnavailable):
            insert_dead_letter(eng, "t", "r", {})
        with pytest.raises(DatabaseUnavailable):
            queries.table_counts(eng)
        with pytest.raises(DatabaseUnavailable):
            migrate.flavour(eng)
    finally:
        eng.dispose()


def test_server_side_disconnect_is_retryable(engine: sa.Engine, symbol: str) -> None:
    """A pooled connection killed by the server (restart, failover) costs no data."""
    assert insert_ticks(engine, ticks([1], symbol)) == 1
    with engine.connect() as conn:  # kill every other connection of this database, pool included
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    # pool_pre_ping notices the dead connections and replaces them
    assert insert_ticks(engine, ticks([1, 2], symbol)) == 1
