"""The beat schedule on the embedded default: no ``DB_URI``, a private embedded PostgreSQL 18 under
``TTQUANT_HOME``, a real ``celery beat`` and a real worker.

The run must produce klines, metrics and position snapshots, archive and drop only the market-data
days past retention, and make a verified backup with the embedded server's own pg_dump that
``ttquant restore`` (again the embedded default, a second fresh server) brings back with identical
row counts.  Every assertion waits for rows or files (no timed assertions).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_backup import counts, embedded_bin
from tests.integration.test_beat import (
    AVG_PRICE,
    LAST_PRICE,
    QTY,
    BeatProcess,
    beat_env,
    job_rows,
    scalar,
    seeded_db,
)
from tests.support.services import free_port
from tests.support.waiting import wait_for
from ttquant_tasks.models import Tick
from ttquant_tasks.ops import backup as bk
from ttquant_tasks.ops.retention import archive_path
from ttquant_tasks.storage.engine import make_engine
from ttquant_tasks.storage.writers import insert_ticks
from ttquant_tasks.tasks.app import BEAT_JOBS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None
RETENTION_DAYS = 10
TODAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
OLD_DAYS = {TODAY - dt.timedelta(days=20): 40, TODAY - dt.timedelta(days=15): 25}
"""Days past retention (ETHUSDT) -> ticks seeded: archived, then dropped."""
KEPT_DAY, KEPT_ROWS = TODAY - dt.timedelta(days=3), 12
"""A day inside retention (ETHUSDT): never archived, never dropped."""


def day_ticks(day: dt.datetime, first_id: int, n: int) -> list[Tick]:
    t0 = int(day.timestamp()) * 10**9 + 7200 * 10**9  # 02:00 UTC: far from the day boundaries
    return [Tick("binance", "ETHUSDT", i, f"3000.{i:04d}", "0.0100", t0 + i * 10**9, t0 + i * 10**9 + 3)
            for i in range(first_id, first_id + n)]


def stored_days(uri: str) -> dict[tuple[dt.date, str], int]:
    eng = make_engine(uri)
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.text("SELECT (time AT TIME ZONE 'UTC')::date, symbol, count(*) FROM market_data "
                                        "GROUP BY 1, 2")).all()
        return {(r[0], str(r[1])): int(r[2]) for r in rows}
    finally:
        eng.dispose()


@pytest.fixture
def embedded_home() -> Iterator[Callable[[], tuple[Path, str]]]:
    """Factory: a ``TTQUANT_HOME`` with a running private embedded PostgreSQL 18 -> (home, its DSN).

    Not under tmp_path (pytest makes that 0700, locking out the unprivileged user the server runs as
    when we are root).  Each server is stopped afterwards, killed by its pid if the stop fails."""
    from ttquant_tasks.services.embedded import EmbeddedPostgres
    from ttquant_tasks.services.resolve import postgres_root

    if embedded_bin() is None:
        pytest.skip("embedded PostgreSQL binaries not installed")
    started: list[tuple[Path, EmbeddedPostgres]] = []

    def make() -> tuple[Path, str]:
        home = Path(tempfile.mkdtemp(prefix="ttq-beat-emb-"))
        pg = EmbeddedPostgres(postgres_root(home), port=free_port())
        started.append((home, pg))
        return home, pg.start()

    yield make
    for home, pg in started:
        pid = pg.pid()
        try:
            pg.stop()
        finally:
            if pid is not None and pg.pid() == pid:
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def start_beat(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], BeatProcess]]:
    beats: list[BeatProcess] = []

    def start(env: dict[str, str]) -> BeatProcess:
        beats.append(BeatProcess(env, tmp_path / "beat"))
        return beats[-1]

    yield start
    for beat in beats:
        beat.stop()


def test_beat_on_the_embedded_default(embedded_home: Callable[[], tuple[Path, str]], redis_url: str,
                                      stack_env: Callable[..., dict[str, str]], start_worker: Callable[..., Any],
                                      start_beat: Callable[..., BeatProcess], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    home, db = embedded_home()
    seeded_db(lambda _prefix: db, "plain")  # recent BTCUSDT ticks and an open position, as in test_beat
    eng = make_engine(db)
    try:
        next_id = 1
        for day, n in [*OLD_DAYS.items(), (KEPT_DAY, KEPT_ROWS)]:
            insert_ticks(eng, day_ticks(day, next_id, n))
            next_id += n
    finally:
        eng.dispose()
    before = stored_days(db)
    assert sum(before[(d.date(), "ETHUSDT")] for d in OLD_DAYS) == sum(OLD_DAYS.values())

    # The embedded default: no DB_URI anywhere, so worker and beat find the server under TTQUANT_HOME.
    monkeypatch.delenv("DB_URI", raising=False)
    extra: dict[str, str] = {"TTQUANT_HOME": str(home), "TTQUANT_RETENTION_DAYS": str(RETENTION_DAYS)}
    if not HAS_PYARROW:  # the archive extra is missing: keep retention out of this run
        extra["TTQUANT_RETENTION_INTERVAL"] = "86400"
    env = beat_env(stack_env, db, redis_url, tmp_path, **extra)
    del env["DB_URI"]
    worker = start_worker(env, queues="maintenance", concurrency=2)
    beat = start_beat(env)

    expected_jobs = {f"job.{j}" for j in BEAT_JOBS} - (set() if HAS_PYARROW else {"job.retention"})
    wait_for(lambda: expected_jobs <= set(job_rows(db, "run_s")), timeout=180,
             what=f"a run of every job (beat log: {beat.log()[-1500:]})")
    assert job_rows(db, "job_failed") == {}

    # klines, mark-to-market and metrics, as on the machine's PostgreSQL
    assert scalar(db, "SELECT close FROM klines WHERE symbol = 'BTCUSDT' AND \"interval\" = '1m' "
                      "ORDER BY time DESC LIMIT 1") == LAST_PRICE
    snap = wait_for(lambda: scalar(db, "SELECT unrealized_pnl FROM latest_positions WHERE strategy_id = 's1' "
                                       "AND time > now() - interval '10 minutes'"), what="a position snapshot")
    assert snap == (LAST_PRICE - AVG_PRICE) * QTY
    assert scalar(db, "SELECT count(*) FROM metrics WHERE component = 'feed.BTCUSDT' AND metric_name = 'lag_s'") >= 1
    assert scalar(db, "SELECT count(*) FROM metrics WHERE component = 'db' AND metric_name = 'ticks_per_s'") >= 1

    # retention/archive: exactly the old days are gone, each one first archived in full
    if HAS_PYARROW:
        import pyarrow.parquet as pq

        after = stored_days(db)
        for day, n in OLD_DAYS.items():
            assert (day.date(), "ETHUSDT") not in after
            table = pq.read_table(archive_path(tmp_path / "archive", "binance", "ETHUSDT", day.date()))
            assert table.num_rows == n
        assert {k: v for k, v in before.items() if k[0] not in {d.date() for d in OLD_DAYS}} == after
        assert after[(KEPT_DAY.date(), "ETHUSDT")] == KEPT_ROWS
        assert not archive_path(tmp_path / "archive", "binance", "ETHUSDT", KEPT_DAY.date()).exists()

    # a backup started after a retention run had finished, by the embedded server's pg_dump, verified
    retention_end = scalar(db, "SELECT max(time + make_interval(secs => value)) FROM metrics "
                               "WHERE component = 'job.retention' AND metric_name = 'run_s'") if HAS_PYARROW else None

    def newest_backup() -> Path | None:
        newest = bk.latest_backup(tmp_path / "backups")
        if newest is None:
            return None
        made = bk.backup_time(newest[0])
        return newest[0] if retention_end is None or (made is not None and made > retention_end) else None

    wait_for(newest_backup, timeout=120, what="a backup after the retention run")
    # Stop the schedule, then the worker: no later backup can prune (keep=2) the one we read.
    beat.stop()
    worker.stop()
    dump = newest_backup()
    assert dump is not None
    sidecar = json.loads(bk.sidecar_path(dump).read_text())
    assert sidecar["pg_dump_version"] >= 18 and sidecar["server_version"] >= 18
    assert bk.sha256_path(dump).read_text().split()[0] == bk.file_sha256(dump)
    assert bk.list_archive(bk.find_tool("pg_restore", embedded_bin()), dump)
    expected = sidecar["row_counts"]
    assert expected["klines"] >= 1 and expected["positions"] >= 2 and expected["metrics"] >= 1
    assert expected["market_data"] == sum(stored_days(db).values())

    # `ttquant restore FILE` on the embedded default of a second, fresh home: an empty database
    home2, target = embedded_home()
    assert scalar(target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    restore_env = {**os.environ, **{k: v for k, v in env.items() if k != "DB_URI"}, "TTQUANT_HOME": str(home2)}
    result = subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", "restore", str(dump)], env=restore_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["row_counts"] == expected
    assert counts(target) == expected
