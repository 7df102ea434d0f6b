"""rollup_klines against the real PostgreSQL, both flavours: correct OHLCV, idempotent re-runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ttquant_tasks.errors import ConfigError
from ttquant_tasks.models import Tick
from ttquant_tasks.ops.klines import minute_range, rollup_klines
from ttquant_tasks.storage import migrate
from ttquant_tasks.storage.engine import make_engine
from ttquant_tasks.storage.writers import insert_ticks

pytestmark = pytest.mark.integration

MINUTE_NS = 60 * 10**9
# A whole UTC minute three days ago (inside the compression horizon of the TimescaleDB flavour).
BASE = (dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).replace(second=0, microsecond=0)
BASE_NS = int(BASE.timestamp()) * 10**9


def tick(trade_id: int, price: str, qty: str, offset_ns: int, symbol: str = "BTCUSDT") -> Tick:
    return Tick("binance", symbol, trade_id, price, qty, BASE_NS + offset_ns, BASE_NS + offset_ns + 1)


# Minute 0: ids 10..14, three sharing one timestamp (the open is still the lowest id); the highest
# price is not the last trade.  Minute 1: one trade.  Minute 3: two trades (minute 2 has none).
TICKS = [
    tick(10, "100.50", "0.100", 5 * 10**9),
    tick(11, "100.40", "0.250", 5 * 10**9),
    tick(12, "101.00", "0.001", 5 * 10**9),
    tick(13, "99.90", "1.5", 30 * 10**9),
    tick(14, "100.00", "0.00001", 59 * 10**9 + 999_999_000),
    tick(15, "100.10", "2", MINUTE_NS + 1),
    tick(16, "98.00", "0.3", 3 * MINUTE_NS),
    tick(17, "98.50", "0.7", 3 * MINUTE_NS + 10**9),
    tick(3, "7.0", "1", 10**9, symbol="ETHUSDT"),
]


def bars(engine: sa.Engine) -> dict[tuple[str, dt.datetime], tuple[Decimal, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT symbol, time, open, high, low, close, volume FROM klines "
                                    "WHERE \"interval\" = '1m' ORDER BY symbol, time")).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


@pytest.fixture(params=["plain", "timescale"])
def engine(request: pytest.FixtureRequest, make_database: Callable[..., str]) -> Iterator[sa.Engine]:
    uri = make_database(f"kl_{request.param}")
    if request.param == "timescale" and not migrate.timescale_installable(uri):
        pytest.skip("TimescaleDB is not installable on this PostgreSQL server")
    assert migrate.init_db(uri, "auto" if request.param == "timescale" else "plain")["flavour"] == request.param
    eng = make_engine(uri)
    insert_ticks(eng, TICKS)
    yield eng
    eng.dispose()


def m(n: int) -> dt.datetime:
    return BASE + dt.timedelta(minutes=n)


def test_ohlcv_is_correct_and_rerun_changes_nothing(engine: sa.Engine) -> None:
    assert rollup_klines(engine, m(0), m(5)) == 4
    D = Decimal
    expected = {
        ("BTCUSDT", m(0)): (D("100.50"), D("101.00"), D("99.90"), D("100.00"), D("1.85101")),
        ("BTCUSDT", m(1)): (D("100.10"),) * 4 + (D("2"),),
        ("BTCUSDT", m(3)): (D("98.00"), D("98.50"), D("98.00"), D("98.50"), D("1.0")),
        ("ETHUSDT", m(0)): (D("7.0"),) * 4 + (D("1"),),
    }
    assert bars(engine) == expected
    with engine.connect() as conn:  # exact decimal text, not a float rendering
        assert conn.execute(sa.text("SELECT volume::text FROM klines WHERE symbol='BTCUSDT' "
                                    "ORDER BY time LIMIT 1")).scalar() == "1.85101"
    assert rollup_klines(engine, m(0), m(5)) == 0
    assert rollup_klines(engine, m(0) + dt.timedelta(seconds=20), m(1)) == 0  # widened to minute 0
    assert bars(engine) == expected


def test_late_trade_corrects_its_bar_only(engine: sa.Engine) -> None:
    rollup_klines(engine, m(0), m(5))
    before = bars(engine)
    insert_ticks(engine, [tick(18, "120.00", "0.5", 3 * MINUTE_NS + 2 * 10**9)])
    assert rollup_klines(engine, m(0), m(5)) == 1
    after = bars(engine)
    assert after[("BTCUSDT", m(3))] == (Decimal("98.00"), Decimal("120.00"), Decimal("98.00"),
                                        Decimal("120.00"), Decimal("1.5"))
    assert {k: v for k, v in after.items() if k != ("BTCUSDT", m(3))} == {
        k: v for k, v in before.items() if k != ("BTCUSDT", m(3))}


def test_range_limits_which_minutes_are_written(engine: sa.Engine) -> None:
    assert rollup_klines(engine, m(1), m(3)) == 1
    assert list(bars(engine)) == [("BTCUSDT", m(1))]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ConfigError, match="until"):
        minute_range(m(0), m(0))
    with pytest.raises(ConfigError, match="since"):
        minute_range(dt.datetime(2024, 1, 1), m(1))
    assert minute_range(m(0) + dt.timedelta(seconds=1), m(2) + dt.timedelta(microseconds=1)) == (m(0), m(3))


def test_unknown_interval_is_refused(engine: sa.Engine) -> None:
    with pytest.raises(ConfigError, match="interval"):
        rollup_klines(engine, m(0), m(5), interval="5m")
