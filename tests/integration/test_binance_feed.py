"""The real ``ttquant feed --source binance`` process against FakeBinance on 127.0.0.1, a real worker,
PostgreSQL and Redis; proven with ``ttquant audit`` (exit 0: every trade id stored once).

Faults scripted on the fake: dropped connection, stale connection, close by the server, rotation at
a tiny age limit, skipped ids (-> REST backfill, first answered with 429), malformed and unknown
frames; SIGKILL and restart (resume from the database's last id, backfill the hole); record then
replay.  Each test uses its own trade-id range and database, so chunks left on the shared Redis
by one test can never look like duplicates in the next.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import fake_binance
from tests.support.fake_binance import ConnScript, FakeBinance
from tests.support.services import free_port
from tests.support.waiting import wait_for
from ttquant_tasks.feed.playback import Playback
from ttquant_tasks.feed.record import replay
from ttquant_tasks.storage.audit import SymbolAudit, audit_trades
from ttquant_tasks.storage.engine import make_engine
from ttquant_tasks.storage.migrate import init_db

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SYMBOLS = ("BTCUSDT", "ETHUSDT")
CLI = [sys.executable, "-m", "ttquant_tasks.cli"]
SINCE = (datetime.now(UTC) - timedelta(days=1)).isoformat()


class Proc:
    """A ``ttquant`` subprocess with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(CLI + args, env={**os.environ, **env}, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:  # only what this test started, by pid
        if p.proc.poll() is None:
            p.proc.kill()
            p.wait(10)


@pytest.fixture
def fake(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBinance]:
    first_id = getattr(request, "param", 1_000_000)
    # Trade times near now: TimescaleDB's retention/compression policies must not touch the rows.
    monkeypatch.setattr(fake_binance, "BASE_MS", int(time.time() * 1000) - first_id - 600_000)
    with FakeBinance(SYMBOLS, first_id=first_id, interval_s=0.01, ping_interval_s=0.3) as f:
        yield f


@pytest.fixture
def db(make_database: Callable[..., str]) -> str:
    uri = make_database("bfeed")
    init_db(uri)
    return uri


@pytest.fixture
def env(db: str, redis_url: str, fake: FakeBinance, stack_env: Callable[..., dict[str, str]]) -> dict[str, str]:
    return stack_env(db, redis_url, BINANCE_WS_URL=fake.ws_base, BINANCE_REST_URL=fake.rest_base,
                     ZMQ_PUB_ENDPOINT=f"tcp://127.0.0.1:{free_port()}", TTQUANT_SYMBOLS=",".join(SYMBOLS),
                     TTQUANT_CHUNK_AGE="0.2", TTQUANT_BINANCE_STALE_AFTER="1.5", TTQUANT_BINANCE_MAX_AGE="3")


def audits(db: str) -> dict[str, SymbolAudit]:
    engine = make_engine(db)
    try:
        since = datetime.fromisoformat(SINCE)
        return {a.symbol: a for a in audit_trades(engine, "binance", since, datetime.now(UTC) + timedelta(days=1))}
    finally:
        engine.dispose()


def stored_through(db: str, targets: dict[str, int]) -> bool:
    """Every symbol stored up to its target id, with no hole and no duplicate (polled, not asserted)."""
    found = audits(db)
    return all(s in found and found[s].last_id >= t and found[s].clean for s, t in targets.items())


def audit_cli(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + ["audit", "--since", SINCE, *extra], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def assert_audit_clean(env: dict[str, str], min_rows: int) -> dict[str, Any]:
    out = audit_cli(env, "--symbol", ",".join(SYMBOLS), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["clean"] and [s["symbol"] for s in report["symbols"]] == sorted(SYMBOLS)
    for s in report["symbols"]:
        assert s["missing_ids"] == 0 and s["duplicate_rows"] == 0
        assert s["rows"] == s["last_id"] - s["first_id"] + 1 >= min_rows
    return report


def feed_counters(log: str) -> dict[str, int]:
    """The source's counters from the feed's last log line about them."""
    lines = re.findall(r"binance source stopped: (\{.*\})", log)
    assert lines, "feed did not log its source counters"
    return {k: int(v) for k, v in re.findall(r"'([\w.]+)': (\d+)", lines[-1])}


def exact_rows(db: str, symbol: str, ids: list[int]) -> None:
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT trade_id, last_price::text, volume::text, exchange_time"
                                        " FROM market_data WHERE exchange = 'binance' AND symbol = :s"
                                        " AND trade_id = ANY(:ids)"),
                                {"s": symbol, "ids": ids}).all()
    finally:
        engine.dispose()
    assert len(rows) == len(ids)
    for tid, price, qty, ex_time in rows:
        t = FakeBinance.trade(symbol, tid)
        assert (price, qty, ex_time) == (t["price"], t["qty"], t["time"] * 1_000_000)


@pytest.mark.parametrize("fake", [1_000_000], indirect=True)
def test_every_fault_ends_with_every_id_stored_once(fake: FakeBinance, db: str, env: dict[str, str],
                                                    start_worker: Callable[..., Any], procs: list[Proc],
                                                    tmp_path: Path) -> None:
    bad = ['{"stream":"btcusdt@trade","data":{"e":"trade"', '{"result":null,"id":1}',
           '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{}}}',
           '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":1.5,"q":"1","T":1,"m":true}}']
    fake.scripts.update({
        0: ConnScript(drop_after=150),  # TCP dropped without a close frame
        1: ConnScript(stale_after=150),  # silent, socket open, no pings
        2: ConnScript(inject={50: bad}),  # then rotated at the 3 s age limit
        3: ConnScript(close_after_s=2.0),  # the server closes it (Binance's 24 h limit, scaled down)
    })
    fake.rest_429, fake.retry_after_s = 1, 1  # the first backfill call is rate limited
    start_worker(env, queues="ticks")
    feed = Proc(["feed", "--source", "binance", "--symbols", ",".join(SYMBOLS)], env, tmp_path / "feed.log")
    procs.append(feed)
    wait_for(lambda: fake.connections >= 5 or feed.proc.poll() is not None, 90, what="five connections")
    assert feed.proc.poll() is None, feed.log()[-3000:]
    skip_from = fake.published("BTCUSDT") + 50
    fake.ws_skip.update(("BTCUSDT", i) for i in range(skip_from, skip_from + 11))
    targets = {s: fake.published(s) + 300 for s in SYMBOLS}
    targets["BTCUSDT"] = max(targets["BTCUSDT"], skip_from + 300)
    wait_for(lambda: stored_through(db, targets), 90, what=f"ids through {targets} stored, clean")

    feed.signal(signal.SIGTERM)
    assert feed.wait(30) == 0, feed.log()[-3000:]
    counters = feed_counters(feed.log())
    assert counters["disconnect.error"] + counters.get("disconnect.closed_by_server", 0) >= 2
    assert counters["stale"] >= 1 and counters["rotation.age"] >= 1 and counters["switches"] >= 1
    assert counters["frame_error.malformed_json"] == 1 and counters["frame_error.unknown_stream"] == 1
    assert counters["frame_error.unknown_event"] == 1 and counters["frame_error.bad_value"] == 1
    assert counters["backfill_ticks"] >= 11 and counters.get("unfilled_ids", 0) == 0
    statuses = [s for s, _ in fake.rest_calls]
    assert statuses[0] == 429 and 200 in statuses[1:]
    wait_for(lambda: stored_through(db, targets), 60, what="final chunks stored")
    report = assert_audit_clean(env, min_rows=500)
    assert all(s["known_gaps"] == [] for s in report["symbols"])
    exact_rows(db, "BTCUSDT", list(range(skip_from, skip_from + 11)))  # the backfilled ones, exact values


@pytest.mark.parametrize("fake", [20_000_000], indirect=True)
def test_restart_after_sigkill_resumes_from_the_database_and_backfills(
        fake: FakeBinance, db: str, env: dict[str, str], start_worker: Callable[..., Any], procs: list[Proc],
        tmp_path: Path) -> None:
    env = {**env, "TTQUANT_BINANCE_MAX_AGE": "3600"}
    start_worker(env, queues="ticks")
    first = Proc(["feed", "--source", "binance"], env, tmp_path / "feed1.log")
    procs.append(first)
    wait_for(lambda: stored_through(db, {s: fake.first_id(s) + 300 for s in SYMBOLS}), 60, what="first run stored")
    first.signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    before = audits(db)
    wait_for(lambda: all(fake.published(s) > before[s].last_id + 200 for s in SYMBOLS), 30, what="hole grows")

    second = Proc(["feed", "--source", "binance"], env, tmp_path / "feed2.log")
    procs.append(second)
    targets = {s: fake.published(s) + 200 for s in SYMBOLS}
    wait_for(lambda: stored_through(db, targets), 60, what="restart filled the hole")
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0, second.log()[-3000:]
    assert "resuming after stored ids" in second.log()
    assert feed_counters(second.log())["gaps"] == len(SYMBOLS)  # the first live id showed each hole
    after = assert_audit_clean(env, min_rows=500)
    for s in after["symbols"]:
        assert s["first_id"] == before[s["symbol"]].first_id  # one unbroken run across the crash


@pytest.mark.parametrize("fake", [40_000_000], indirect=True)
def test_record_then_replay_stores_the_recorded_trades(fake: FakeBinance, db: str, env: dict[str, str],
                                                        start_worker: Callable[..., Any], procs: list[Proc],
                                                        tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl.gz"
    rec = Proc(["record", str(path), "--duration", "3"], {**env, "TTQUANT_BINANCE_MAX_AGE": "1.2"},
               tmp_path / "record.log")
    procs.append(rec)
    assert rec.wait(60) == 0, rec.log()[-3000:]
    fake.stop()  # nothing below may come from the network

    recorded = list(Playback(path))
    assert len(recorded) >= 200
    start_worker(env, queues="ticks")
    play = Proc(["feed", "--source", "replay", str(path), "--speed", "max"], env, tmp_path / "replay.log")
    procs.append(play)
    assert play.wait(60) == 0, play.log()[-3000:]
    want = {(t.symbol, t.trade_id, t.price, t.qty, t.exchange_time, t.local_time) for t in recorded}
    raw_trades = sum(1 for _, raw in replay(path) if '"e":"trade"' in raw)
    assert raw_trades > len(recorded) == len(want)  # rotation overlap was recorded, and dropped by trade id

    def stored() -> set[tuple[Any, ...]]:
        engine = make_engine(db)
        try:
            with engine.connect() as conn:
                return {tuple(r) for r in conn.execute(sa.text(
                    "SELECT symbol, trade_id, last_price::text, volume::text, exchange_time, local_time"
                    " FROM market_data WHERE exchange = 'binance'"))}
        finally:
            engine.dispose()

    wait_for(lambda: len(stored()) >= len(want), 60, what="replayed rows stored")
    assert stored() == want
    assert_audit_clean(env, min_rows=100)
