"""archive_and_drop against the real PostgreSQL, both flavours: only archived, verified days are dropped."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ttquant_tasks.models import Tick
from ttquant_tasks.ops.retention import ArchiveError, archive_and_drop, archive_path, horizon
from ttquant_tasks.storage import migrate
from ttquant_tasks.storage.engine import make_engine
from ttquant_tasks.storage.writers import insert_ticks

pytestmark = pytest.mark.integration
pq = pytest.importorskip("pyarrow.parquet", reason="the archive extra (pyarrow) is not installed")

TODAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAY10, DAY9, DAY1 = (TODAY - dt.timedelta(days=n) for n in (10, 9, 1))


def ticks(day: dt.datetime, ids: range, symbol: str = "BTCUSDT") -> list[Tick]:
    t0 = int(day.timestamp()) * 10**9 + 3600 * 10**9
    return [Tick("binance", symbol, i, f"{100 + i}.0100", "0.000010", t0 + i * 10**9, t0 + i * 10**9 + 7, i % 2 == 1)
            for i in ids]


@pytest.fixture(params=["plain", "timescale"])
def engine(request: pytest.FixtureRequest, make_database: Callable[..., str]) -> Iterator[sa.Engine]:
    uri = make_database(f"rt_{request.param}")
    if request.param == "timescale" and not migrate.timescale_installable(uri):
        pytest.skip("TimescaleDB is not installable on this PostgreSQL server")
    assert migrate.init_db(uri, "auto" if request.param == "timescale" else "plain")["flavour"] == request.param
    eng = make_engine(uri)
    if request.param == "timescale":  # the policy would drop unarchived chunks behind our back
        with eng.begin() as conn:
            conn.execute(sa.text("SELECT remove_retention_policy('market_data')"))
    insert_ticks(eng, ticks(DAY10, range(1, 41)) + ticks(DAY9, range(41, 71)) + ticks(DAY1, range(71, 81)))
    insert_ticks(eng, ticks(DAY9, range(1, 6), "ETHUSDT"))
    yield eng
    eng.dispose()


def stored(engine: sa.Engine) -> dict[tuple[dt.date, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT (time AT TIME ZONE 'UTC')::date, symbol, count(*) FROM market_data "
                                    "GROUP BY 1, 2 ORDER BY 1, 2")).all()
    return {(r[0], r[1]): int(r[2]) for r in rows}


def test_archives_then_drops_only_old_days(engine: sa.Engine, tmp_path: Path) -> None:
    report = archive_and_drop(engine, tmp_path, older_than_days=5)
    assert report["failed"] == [] and report["dropped"]
    assert {(a["day"], a["symbol"], a["rows"]) for a in report["archived"]} == {
        (DAY10.date().isoformat(), "BTCUSDT", 40), (DAY9.date().isoformat(), "BTCUSDT", 30),
        (DAY9.date().isoformat(), "ETHUSDT", 5)}
    assert stored(engine) == {(DAY1.date(), "BTCUSDT"): 10}

    table = pq.read_table(archive_path(tmp_path, "binance", "BTCUSDT", DAY10.date()))
    assert table.column("trade_id").to_pylist() == list(range(1, 41))
    assert table.column("last_price").to_pylist()[:2] == ["101.0100", "102.0100"]  # exact strings
    assert set(table.column("volume").to_pylist()) == {"0.000010"}
    first = ticks(DAY10, range(1, 2))[0]
    assert table.column("exchange_time").to_pylist()[0] == first.exchange_time
    assert table.column("time").to_pylist()[0] == dt.datetime.fromtimestamp(first.exchange_time // 10**9, dt.UTC)
    assert table.column("buyer_maker").to_pylist()[:2] == [True, False]
    assert not list(tmp_path.rglob(".*partial"))

    again = archive_and_drop(engine, tmp_path, older_than_days=5)
    assert again["archived"] == [] and again["dropped"] == []
    assert stored(engine) == {(DAY1.date(), "BTCUSDT"): 10}


def test_failed_archive_keeps_its_day_and_later(engine: sa.Engine, tmp_path: Path) -> None:
    blocker = archive_path(tmp_path, "binance", "ETHUSDT", DAY9.date()).parent
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the symbol directory should be")
    with pytest.raises(ArchiveError, match="ETHUSDT"):
        archive_and_drop(engine, tmp_path, older_than_days=5)
    # DAY10 was archived and dropped; DAY9 (ETH failed, BTC archived) is kept whole.
    assert stored(engine) == {(DAY9.date(), "BTCUSDT"): 30, (DAY9.date(), "ETHUSDT"): 5, (DAY1.date(), "BTCUSDT"): 10}
    assert pq.read_table(archive_path(tmp_path, "binance", "BTCUSDT", DAY10.date())).num_rows == 40

    blocker.unlink()
    report = archive_and_drop(engine, tmp_path, older_than_days=5)
    assert report["failed"] == []
    assert stored(engine) == {(DAY1.date(), "BTCUSDT"): 10}
    # The BTC file of DAY9 was written twice: merged, not duplicated.
    assert pq.read_table(archive_path(tmp_path, "binance", "BTCUSDT", DAY9.date())).column(
        "trade_id").to_pylist() == list(range(41, 71))
    assert pq.read_table(archive_path(tmp_path, "binance", "ETHUSDT", DAY9.date())).num_rows == 5


def test_backfill_after_drop_is_merged_into_the_archive(engine: sa.Engine, tmp_path: Path) -> None:
    archive_and_drop(engine, tmp_path, older_than_days=5)
    insert_ticks(engine, ticks(DAY10, range(41, 43)))  # late rows for a day already archived and dropped
    report = archive_and_drop(engine, tmp_path, older_than_days=5)
    assert [(a["rows"], a["file_rows"]) for a in report["archived"]] == [(2, 42)]
    ids = pq.read_table(archive_path(tmp_path, "binance", "BTCUSDT", DAY10.date())).column("trade_id").to_pylist()
    assert sorted(ids) == list(range(1, 43))
    assert stored(engine) == {(DAY1.date(), "BTCUSDT"): 10}


def test_horizon_is_a_utc_midnight() -> None:
    now = dt.datetime(2025, 3, 10, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 2025-03-09 22:30 UTC
    assert horizon(now, 1) == dt.datetime(2025, 3, 8, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="older_than_days"):
        horizon(now, 0)
