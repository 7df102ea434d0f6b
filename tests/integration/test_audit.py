"""``ttquant audit`` against a real database: missing ranges, duplicates, known gaps, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ttquant_tasks.models import Tick
from ttquant_tasks.storage.audit import audit_trades, missing_id_ranges
from ttquant_tasks.storage.engine import make_engine
from ttquant_tasks.storage.gaps import list_gaps, mark_filled, record_gap
from ttquant_tasks.storage.migrate import init_db
from ttquant_tasks.storage.writers import insert_ticks

pytestmark = pytest.mark.integration

T0 = int(datetime(2025, 3, 1, 12, tzinfo=UTC).timestamp()) * 1_000_000_000
SINCE, UNTIL = "2025-03-01", "2025-03-02T00:00:00Z"


def tick(symbol: str, trade_id: int, shift_ns: int = 0) -> Tick:
    return Tick("binance", symbol, trade_id, "100.5", "0.010", T0 + trade_id * 1_000_000 + shift_ns, T0, True)


@pytest.fixture(scope="module")
def db(make_database: Callable[..., str]) -> str:
    """BTCUSDT 1..20 without 4, 5 and 9, id 7 stored twice (another time); ETHUSDT 1..10 clean."""
    uri = make_database("audit")
    init_db(uri, "plain")
    engine = make_engine(uri)
    try:
        insert_ticks(engine, [tick("BTCUSDT", i) for i in range(1, 21) if i not in (4, 5, 9)])
        insert_ticks(engine, [tick("BTCUSDT", 7, shift_ns=5_000_000), tick("BTCUSDT", 7)])  # a copy, and a no-op
        insert_ticks(engine, [tick("ETHUSDT", i) for i in range(1, 11)])
        insert_ticks(engine, [Tick("sim", "BTCUSDT", 50, "1", "1", T0, T0)])  # another exchange: not audited
        record_gap(engine, "binance", "BTCUSDT", 4, 5, "429 beyond our bound")
        record_gap(engine, "binance", "BTCUSDT", 4, 5, "recorded twice: no-op")
        record_gap(engine, "binance", "ETHUSDT", 11, 12, "later filled")
        assert mark_filled(engine, "binance", "ETHUSDT", 11, 12) == 1
    finally:
        engine.dispose()
    return uri


def ttquant(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DB_URI": db, "DB_READ_URI": db}
    return subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", "audit", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_audit_finds_missing_ranges_duplicates_and_known_gaps(db: str) -> None:
    engine = make_engine(db)
    try:
        since, until = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC)
        btc, eth = audit_trades(engine, "binance", since, until)
        assert (btc.symbol, btc.rows, btc.first_id, btc.last_id) == ("BTCUSDT", 18, 1, 20)
        assert (btc.missing_ids, btc.missing, btc.duplicate_rows, btc.duplicates) == (3, [(4, 5), (9, 9)], 1, [(7, 2)])
        assert [(g.from_id, g.to_id, g.reason, g.filled_at) for g in btc.known_gaps] == [
            (4, 5, "429 beyond our bound", None)]
        assert eth.clean and (eth.rows, eth.missing, eth.known_gaps) == (10, [], [])  # 11..12 lies outside 1..10
        assert audit_trades(engine, "binance", until, until + timedelta(days=1)) == []
        assert missing_id_ranges(engine, "binance", "BTCUSDT", 6, 20) == [(9, 9)]
        assert [g.filled_at is not None for g in list_gaps(engine, "binance")] == [False, True]
    finally:
        engine.dispose()


def test_audit_command_exit_codes(db: str) -> None:
    dirty = ttquant(db, "--symbol", "BTCUSDT", "--since", SINCE, "--until", UNTIL, "--json")
    assert dirty.returncode == 1, dirty.stderr
    report = json.loads(dirty.stdout)
    assert report["clean"] is False and report["symbols"][0]["missing"] == [[4, 5], [9, 9]]
    assert report["symbols"][0]["duplicates"] == [[7, 2]]
    clean = ttquant(db, "--symbol", "ETHUSDT", "--since", SINCE, "--until", UNTIL)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "ETHUSDT: 10 rows, ids 1..10, 0 missing, 0 duplicate rows" in clean.stdout
    absent = ttquant(db, "--symbol", "ETHUSDT,XRPUSDT", "--since", SINCE, "--until", UNTIL)
    assert absent.returncode == 1 and "XRPUSDT: no rows in the window" in absent.stdout
    bad_args = (["--since", "yesterday"], ["--since", UNTIL, "--until", SINCE],
                ["--symbol", "BTC USDT;", "--since", SINCE])
    for bad in bad_args:
        out = ttquant(db, *bad)
        assert out.returncode == 2, (bad, out.stdout, out.stderr)
    down = subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", "audit", "--since", SINCE],
                          env={**os.environ, "DB_URI": "postgresql://postgres@127.0.0.1:1/x"},
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 3 and "cannot read the database" in down.stderr
