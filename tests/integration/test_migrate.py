"""migrate.init_db / upgrade_db against a real PostgreSQL: both flavours, idempotency, upgrades."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa

from tests.support.services import free_port
from ttquant_tasks.errors import ConfigError, DatabaseUnavailable, PermanentError
from ttquant_tasks.storage import migrate
from ttquant_tasks.storage.engine import make_engine

pytestmark = pytest.mark.integration

TABLES = {"schema_version", "ttquant_meta", "market_data", "orders", "trades", "positions", "account_balance",
          "metrics", "klines", "dead_letters", "chunk_deliveries", "known_gaps"}
VIEWS = {"latest_positions", "strategy_stats"}
NEWEST = 6


def q(uri: str, sql: str, **params: Any) -> list[Any]:
    eng = make_engine(uri)
    try:
        with eng.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        eng.dispose()


def snapshot(uri: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Objects of the public schema, functions, and schema_version rows (with applied_at)."""
    rels = q(uri, "SELECT relname, relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                  " WHERE nspname = 'public' ORDER BY relname")
    funcs = q(uri, "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                   " WHERE nspname = 'public' ORDER BY 1")
    versions = q(uri, "SELECT version, name, applied_at FROM schema_version ORDER BY version")
    return rels, funcs, versions


@pytest.fixture
def need_timescale(make_database: Callable[..., str]) -> None:
    """Skip where the server cannot load TimescaleDB (e.g. the embedded PostgreSQL 18)."""
    if not migrate.timescale_installable(make_database("mg_probe")):
        pytest.skip("TimescaleDB is not installable on this PostgreSQL server")


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@pytest.mark.usefixtures("need_timescale")
def test_auto_picks_timescale_with_hypertables_and_policies(make_database: Callable[..., str]) -> None:
    uri = make_database("mg_ts")
    result = migrate.init_db(uri)
    assert result == {"flavour": "timescale", "version": NEWEST, "applied": [1, 2, 3, 4, 5, 6], "partitions_created": 0}
    hypertables = {r[0] for r in q(uri, "SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert hypertables == {"market_data", "metrics", "klines"}
    dims = q(uri, "SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions"
                  " WHERE hypertable_name IN ('market_data', 'metrics')")
    assert {(n, i) for n, i in dims} == {("market_data", dt.timedelta(days=1)), ("metrics", dt.timedelta(days=1))}
    seg = q(uri, "SELECT attname FROM timescaledb_information.compression_settings"
                 " WHERE hypertable_name = 'market_data' AND segmentby_column_index IS NOT NULL")
    assert {r[0] for r in seg} == {"exchange", "symbol"}
    jobs = q(uri, "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs"
                  " WHERE hypertable_name IS NOT NULL")
    found = {(p, h, str(c.get("compress_after") or c.get("drop_after"))) for p, h, c in jobs}
    assert found == {("policy_compression", "market_data", "7 days"),
                     ("policy_retention", "market_data", "30 days"),
                     ("policy_retention", "metrics", "7 days"),
                     ("policy_refresh_continuous_aggregate", "klines_1m_cagg", "None")}
    assert q(uri, "SELECT ttquant_ensure_partitions(3)") == [(0,)]
    engine = make_engine(uri)
    try:
        assert migrate.flavour(engine) == "timescale"
    finally:
        engine.dispose()


@pytest.mark.parametrize("flavour", ["auto", "plain"])
def test_init_twice_changes_nothing(make_database: Callable[..., str], flavour: str) -> None:
    uri = make_database("mg_twice")
    migrate.init_db(uri, flavour)
    first = snapshot(uri)
    assert {name for name, _ in first[0]} >= TABLES | VIEWS
    assert [(v, n) for v, n, _ in first[2]] == [(1, "001_init"), (2, "002_market_data"), (3, "003_maintenance"),
                                               (4, "004_known_gaps"), (5, "005_perf_indexes"),
                                               (6, "006_klines_cagg")]
    again = migrate.init_db(uri, flavour)
    assert again["applied"] == [] and again["partitions_created"] == 0
    assert migrate.upgrade_db(uri)["applied"] == []
    assert snapshot(uri) == first


@pytest.mark.parametrize("flavour", ["timescale", "plain"])
def test_upgrade_from_version_1_applies_the_rest(make_database: Callable[..., str], flavour: str,
                                                request: pytest.FixtureRequest) -> None:
    if flavour == "timescale":
        request.getfixturevalue("need_timescale")
    uri = make_database("mg_up")
    assert migrate.init_db(uri, flavour, target=1)["applied"] == [1]
    assert q(uri, "SELECT to_regclass('market_data')") == [(None,)]
    q(uri, "INSERT INTO orders (order_id, strategy_id, symbol, side, price, volume, timestamp)"
           " VALUES ('o1', 's1', 'BTCUSDT', 'BUY', 64000.5, 0.001, 1)")
    result = migrate.upgrade_db(uri)  # no flavour given: the recorded one is used
    assert result["flavour"] == flavour and result["applied"] == [2, 3, 4, 5, 6] and result["version"] == NEWEST
    assert q(uri, "SELECT order_id, volume::text FROM orders") == [("o1", "0.001")]  # data kept
    assert migrate.upgrade_db(uri)["applied"] == []


def test_plain_partitions_and_maintenance_functions(make_database: Callable[..., str]) -> None:
    uri = make_database("mg_plain")
    result = migrate.init_db(uri, "plain", days_ahead=2)
    assert result["flavour"] == "plain" and result["partitions_created"] == 3
    assert q(uri, "SELECT relkind FROM pg_class WHERE relname = 'market_data'") == [("p",)]

    def parts() -> set[str]:
        return {r[0] for r in q(uri, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                                     " WHERE i.inhparent = 'market_data'::regclass")}

    today = utc_today()
    names = {f"market_data_p{today + dt.timedelta(days=i):%Y%m%d}" for i in range(3)}
    assert parts() == names | {"market_data_default"}
    assert q(uri, "SELECT ttquant_ensure_partitions(4)") == [(2,)]
    assert q(uri, "SELECT ttquant_ensure_partitions(4)") == [(0,)]

    old_day = today - dt.timedelta(days=40)
    # a foreign writer's row for a day without a partition lands in DEFAULT ...
    q(uri, "INSERT INTO market_data VALUES (:t, 'X', 'binance', 1, 1, 0, 0, 1, null)",
      t=dt.datetime(old_day.year, old_day.month, old_day.day, 12, tzinfo=dt.UTC))
    assert q(uri, "SELECT count(*) FROM market_data_default") == [(1,)]
    # ... and moves to the day's own partition when it is created
    assert q(uri, "SELECT ttquant_ensure_day(:d)", d=old_day) == [(True,)]
    assert q(uri, "SELECT count(*) FROM market_data_default") == [(0,)]
    assert q(uri, f"SELECT count(*) FROM market_data_p{old_day:%Y%m%d}") == [(1,)]

    dropped = q(uri, "SELECT * FROM ttquant_drop_partitions(interval '30 days')")
    assert dropped == [(f"market_data_p{old_day:%Y%m%d}",)]
    assert q(uri, "SELECT * FROM ttquant_drop_partitions(interval '30 days')") == []
    assert len(parts()) == 6  # today..today+4 and the default
    with pytest.raises(sa.exc.DBAPIError, match="days_ahead"):
        q(uri, "SELECT ttquant_ensure_partitions(-1)")


def test_concurrent_creation_of_one_day_partition(make_database: Callable[..., str]) -> None:
    """The second creator waits for the first and then finds the partition (no DuplicateTable)."""
    uri = make_database("mg_race")
    migrate.init_db(uri, "plain")
    first, second = psycopg2.connect(uri), psycopg2.connect(uri)
    try:
        with first.cursor() as cur:
            cur.execute("SELECT ttquant_ensure_day('2001-01-01')")
            assert cur.fetchone() == (True,)
        outcome: list[object] = []

        def create() -> None:
            try:
                with second.cursor() as cur:
                    cur.execute("SELECT ttquant_ensure_day('2001-01-01')")
                    outcome.append(cur.fetchone())
                second.commit()
            except Exception as exc:  # reported by the assertion below
                outcome.append(exc)

        waiter = threading.Thread(target=create)
        waiter.start()
        probe = psycopg2.connect(uri)
        probe.autocommit = True
        with probe.cursor() as cur:
            while not outcome:  # until the second creator queues on the partition lock
                cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                if cur.fetchone() == (1,):
                    break
        probe.close()
        first.commit()
        waiter.join()
        assert outcome == [(False,)]
    finally:
        first.close()
        second.close()


def test_flavour_is_recorded_and_cannot_switch(make_database: Callable[..., str]) -> None:
    uri = make_database("mg_switch")
    engine = make_engine(uri)
    try:
        assert migrate.flavour(engine) is None
        migrate.init_db(uri, "plain")
        assert migrate.flavour(engine) == "plain"
    finally:
        engine.dispose()
    with pytest.raises(ConfigError, match="cannot switch"):
        migrate.init_db(uri, "timescale")


def test_database_newer_than_code_is_refused(make_database: Callable[..., str]) -> None:
    uri = make_database("mg_newer")
    migrate.init_db(uri, "plain")
    q(uri, "INSERT INTO schema_version (version, name) VALUES (99, '099_future')")
    with pytest.raises(PermanentError, match="newer than this code"):
        migrate.upgrade_db(uri)


def test_failed_migration_rolls_back_whole_version(make_database: Callable[..., str], tmp_path: Path) -> None:
    shutil.copy(migrate.SQL_DIR / "001_init.sql", tmp_path / "001_init.sql")
    (tmp_path / "002_broken.sql").write_text("CREATE TABLE half_done (x int);\nSELECT no_such_function();\n")
    uri = make_database("mg_broken")
    with pytest.raises(PermanentError, match="002_broken.sql"):
        migrate.init_db(uri, "plain", sql_dir=tmp_path)
    assert q(uri, "SELECT version FROM schema_version") == [(1,)]
    assert q(uri, "SELECT to_regclass('half_done')") == [(None,)]


def test_unreachable_database_is_retryable() -> None:
    with pytest.raises(DatabaseUnavailable):
        migrate.init_db(f"postgres://postgres@127.0.0.1:{free_port()}/nothing")
