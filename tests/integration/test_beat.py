"""The beat schedule end to end: a real ``celery beat`` process, a real worker, the real database.

Intervals are shortened through the environment (``TTQUANT_*_INTERVAL``); every assertion waits
for rows or files to appear (no timed assertions).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.stack import client_app
from tests.support.waiting import wait_for
from ttquant_tasks.models import Tick
from ttquant_tasks.ops import backup as bk
from ttquant_tasks.ops.locks import lock_key
from ttquant_tasks.storage import migrate
from ttquant_tasks.storage.engine import make_engine
from ttquant_tasks.storage.writers import insert_ticks
from ttquant_tasks.tasks.app import BEAT_JOBS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

LAST_PRICE = Decimal("61234.50")
AVG_PRICE = Decimal("60000.25")
QTY = Decimal("0.5")


class BeatProcess:
    """``celery -A ttquant_tasks beat`` with its schedule file and log under ``directory``."""

    def __init__(self, env: dict[str, str], directory: Path, name: str = "beat") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        argv = [sys.executable, "-m", "celery", "-A", "ttquant_tasks", "beat", "--loglevel", "INFO",
                "-s", str(directory / f"{name}-schedule"), "--pidfile", str(directory / f"{name}.pid")]
        self.proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture
def start_beat(tmp_path: Path) -> Iterator[Callable[..., BeatProcess]]:
    beats: list[BeatProcess] = []

    def start(env: dict[str, str], name: str = "beat") -> BeatProcess:
        beat = BeatProcess(env, tmp_path / "beat", name)
        beats.append(beat)
        return beat

    yield start
    for beat in beats:
        beat.stop()


def seeded_db(make_database: Callable[..., str], flavour: str) -> str:
    """A database with ticks of the last minutes (BTCUSDT, last price LAST_PRICE) and one open position."""
    uri = make_database(f"beat_{flavour}")
    if flavour == "timescale" and not migrate.timescale_installable(uri):
        pytest.skip("TimescaleDB is not installable on this PostgreSQL server")
    assert migrate.init_db(uri, "auto" if flavour == "timescale" else "plain")["flavour"] == flavour
    now_ns = time.time_ns()
    t0 = now_ns - 120 * 10**9
    ticks = [Tick("binance", "BTCUSDT", i, f"{60000 + i}.50", "0.01000", t0 + i * 10**9, t0 + i * 10**9 + 5)
             for i in range(1, 100)]
    ticks.append(Tick("binance", "BTCUSDT", 100, str(LAST_PRICE), "0.02000", t0 + 100 * 10**9, t0 + 100 * 10**9 + 5))
    eng = make_engine(uri)
    try:
        insert_ticks(eng, ticks)
        with eng.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO positions (time, strategy_id, symbol, position, avg_price, unrealized_pnl, realized_pnl) "
                "VALUES (now() - interval '1 hour', 's1', 'BTCUSDT', :q, :avg, 0, 12.5)"), {"q": QTY, "avg": AVG_PRICE})
    finally:
        eng.dispose()
    return uri


def beat_env(stack_env: Callable[..., dict[str, str]], db: str, broker: str, tmp_path: Path,
             every: str = "1.5", **extra: str) -> dict[str, str]:
    intervals = {f"TTQUANT_{f.removesuffix('_interval').upper()}_INTERVAL": every for _, f in BEAT_JOBS.values()}
    return stack_env(db, broker, TTQUANT_BACKUP_DIR=str(tmp_path / "backups"),
                     TTQUANT_ARCHIVE_DIR=str(tmp_path / "archive"), TTQUANT_BACKUP_KEEP="2",
                     TTQUANT_SYMBOLS="BTCUSDT", EXCHANGE="binance", **{**intervals, **extra})


def scalar(uri: str, sql: str, **params: Any) -> Any:
    eng = make_engine(uri)
    try:
        with eng.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        eng.dispose()


def job_rows(uri: str, metric: str) -> dict[str, int]:
    eng = make_engine(uri)
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.text("SELECT component, count(*) FROM metrics WHERE metric_name = :m "
                                        "GROUP BY component"), {"m": metric})
            return {str(c): int(n) for c, n in rows}
    finally:
        eng.dispose()


def test_interval_settings_cover_every_job() -> None:
    from ttquant_tasks.settings import Settings
    from ttquant_tasks.tasks.app import beat_schedule

    schedule = beat_schedule(Settings.from_env({"TTQUANT_KLINES_INTERVAL": "7", "TTQUANT_BACKUP_INTERVAL": "3600"}))
    assert schedule["klines"]["schedule"] == 7.0 and schedule["backup"]["schedule"] == 3600.0
    assert {v["task"] for v in schedule.values()} == {t for t, _ in BEAT_JOBS.values()}
    assert all(v["options"]["queue"] == "maintenance" for v in schedule.values())


@pytest.mark.parametrize("flavour", ["plain", "timescale"])
def test_beat_runs_every_job(flavour: str, make_database: Callable[..., str], redis_url: str,
                             stack_env: Callable[..., dict[str, str]], start_worker: Callable[..., Any],
                             start_beat: Callable[..., BeatProcess], tmp_path: Path) -> None:
    db = seeded_db(make_database, flavour)
    env = beat_env(stack_env, db, redis_url, tmp_path)
    start_worker(env, queues="maintenance", concurrency=2)
    beat = start_beat(env)

    # every job ran at least once, none failed
    ran = wait_for(lambda: (r := job_rows(db, "run_s")) and len(r) == len(BEAT_JOBS) and r, timeout=120,
                   what=f"a run of every job (beat log: {beat.log()[-1500:]})")
    assert set(ran) == {f"job.{j}" for j in BEAT_JOBS}
    assert job_rows(db, "job_failed") == {}

    # klines: the bars of the seeded minutes, the last one closing at the last price
    close = scalar(db, "SELECT close FROM klines WHERE symbol = 'BTCUSDT' AND \"interval\" = '1m' "
                       "ORDER BY time DESC LIMIT 1")
    assert close == LAST_PRICE
    assert scalar(db, "SELECT sum(volume) FROM klines WHERE symbol = 'BTCUSDT'") == Decimal("1.01000")

    # mark-to-market: a newer snapshot, unrealized PnL exact at the last price, realized carried over
    snap = wait_for(lambda: scalar(db, "SELECT unrealized_pnl FROM latest_positions WHERE strategy_id = 's1' "
                                       "AND time > now() - interval '10 minutes'"), what="a position snapshot")
    assert snap == (LAST_PRICE - AVG_PRICE) * QTY
    assert scalar(db, "SELECT realized_pnl FROM latest_positions WHERE strategy_id = 's1'") == Decimal("12.5")

    # metrics: ticks/s, lag of BTCUSDT (the newest tick is ~20 s old), queue depths
    lag = scalar(db, "SELECT value FROM metrics WHERE component = 'feed.BTCUSDT' AND metric_name = 'lag_s' "
                     "ORDER BY time DESC LIMIT 1")
    assert lag is not None and lag >= 19
    assert scalar(db, "SELECT count(*) FROM metrics WHERE component = 'db' AND metric_name = 'ticks_per_s'") >= 1
    assert scalar(db, "SELECT count(*) FROM metrics WHERE component = 'broker' AND metric_name = 'parked'") >= 1

    # backup: complete, checksum right, readable by pg_restore, row counts recorded
    newest = bk.latest_backup(tmp_path / "backups")
    assert newest is not None
    dump = newest[0]
    assert bk.sha256_path(dump).read_text().split()[0] == bk.file_sha256(dump)
    assert bk.list_archive(bk.find_tool("pg_restore", None), dump)
    assert not list((tmp_path / "backups").glob(".*partial"))

    # plain flavour: today's partitions exist ahead
    if flavour == "plain":
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y%m%d")
        assert scalar(db, "SELECT to_regclass(:n) IS NOT NULL", n=f"market_data_p{tomorrow}")
    else:
        assert scalar(db, "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention' "
                          "AND hypertable_name = 'market_data'") == 0


def test_two_beats_never_run_a_job_twice_at_once(make_database: Callable[..., str], redis_url: str,
                                                 stack_env: Callable[..., dict[str, str]],
                                                 start_worker: Callable[..., Any],
                                                 start_beat: Callable[..., BeatProcess], tmp_path: Path) -> None:
    db = seeded_db(make_database, "plain")
    # backups and archives every few seconds only: the point here is many overlapping triggers
    env = beat_env(stack_env, db, redis_url, tmp_path, every="1", TTQUANT_BACKUP_INTERVAL="5",
                   TTQUANT_RETENTION_INTERVAL="5")
    start_worker(env, queues="maintenance", concurrency=2)
    start_worker(env, queues="maintenance", concurrency=2)
    start_beat(env, "beat-a")
    start_beat(env, "beat-b")
    wait_for(lambda: job_rows(db, "run_s").get("job.klines", 0) >= 2, timeout=120, what="klines runs")

    # While this test holds the klines lock, every run the beats trigger must skip.
    eng = make_engine(db)
    try:
        with eng.connect() as conn:
            key = lock_key("klines")
            # a run may hold it right now: try until it is free
            wait_for(lambda: conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar(),
                     what="the klines lock")
            conn.commit()
            held_from = scalar(db, "SELECT now()")
            skipped_before = job_rows(db, "skipped").get("job.klines", 0)
            wait_for(lambda: job_rows(db, "skipped").get("job.klines", 0) >= skipped_before + 3, timeout=90,
                     what="klines runs skipped while the lock is held")
            held_to = scalar(db, "SELECT now()")
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
    finally:
        eng.dispose()
    wait_for(lambda: scalar(db, "SELECT count(*) FROM metrics WHERE component = 'job.klines' "
                                "AND metric_name = 'run_s' AND time > :t", t=held_to), timeout=60,
             what="a klines run after the lock was released")
    assert scalar(db, "SELECT count(*) FROM metrics WHERE component = 'job.klines' AND metric_name = 'run_s' "
                      "AND time BETWEEN :a AND :b", a=held_from, b=held_to) == 0

    # Across all jobs and both beats: no two runs of one job overlap in time.
    eng = make_engine(db)
    try:
        with eng.connect() as conn:
            runs = conn.execute(sa.text(
                "SELECT component, time, time + make_interval(secs => value) FROM metrics "
                "WHERE metric_name = 'run_s' ORDER BY component, time")).all()
    finally:
        eng.dispose()
    assert len(runs) > len(BEAT_JOBS)
    for prev, cur in zip(runs, runs[1:], strict=False):
        if prev[0] == cur[0]:
            assert cur[1] >= prev[2], f"{cur[0]} runs overlap: {prev[1:]} and {cur[1:]}"


def test_failing_job_reports_why(schema_db: str, redis_url: str, stack_env: Callable[..., dict[str, str]],
                                 start_worker: Callable[..., Any], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the backup directory should be\n")
    env = stack_env(schema_db, redis_url, TTQUANT_BACKUP_DIR=str(blocker / "backups"))
    worker = start_worker(env, queues="maintenance")
    before = job_rows(schema_db, "job_failed").get("job.backup", 0)
    client_app(env).send_task("ttquant.backup")
    wait_for(lambda: job_rows(schema_db, "job_failed").get("job.backup", 0) > before, what="a job_failed row")
    log = wait_for(lambda: "job backup failed" in worker.log() and worker.log(), what="the failure in the log")
    line = next(ln for ln in log.splitlines() if "job backup failed" in ln)
    assert "not-a-directory" in line and ("NotADirectoryError" in line or "FileExistsError" in line), line
