"""``ttquant backup`` then ``ttquant restore`` as an operator runs them (subprocesses, real servers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from ttquant_tasks.models import Tick
from ttquant_tasks.storage import migrate, queries
from ttquant_tasks.storage.engine import make_engine
from ttquant_tasks.storage.writers import insert_ticks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def ttquant(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", *argv], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, check=False)


def counts(uri: str) -> dict[str, int]:
    eng = make_engine(uri)
    try:
        return queries.table_counts(eng)
    finally:
        eng.dispose()


def test_cli_backup_then_restore_gives_identical_counts(make_database: Callable[..., str], redis_url: str,
                                                        tmp_path: Path) -> None:
    src = make_database("cli_bk")
    migrate.init_db(src, "plain")
    t0 = time.time_ns()
    eng = make_engine(src)
    insert_ticks(eng, [Tick("binance", "ETHUSDT", i, f"3000.{i:04d}", "0.12345678", t0 + i, t0 + i + 1)
                       for i in range(1, 251)])
    with eng.begin() as conn:
        conn.execute(sa.text("INSERT INTO metrics (component, metric_name, value) VALUES ('t', 'x', 2.5)"))
    eng.dispose()
    env = {"DB_URI": src, "CELERY_BROKER_URL": redis_url, "TTQUANT_HOME": str(tmp_path / "home"),
           "TTQUANT_BACKUP_DIR": str(tmp_path / "bk")}

    made = ttquant(env, "backup")
    assert made.returncode == 0, made.stderr
    dump = Path(json.loads(made.stdout)["path"])
    assert dump.parent == tmp_path / "bk" and dump.exists()

    # status shows the newest backup, the lag of the stored symbol and the queues
    status = ttquant(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["backup"]["path"] == str(dump) and report["backup"]["age_s"] >= 0
    assert set(report["db"]["lag_s"]) == {"ETHUSDT"} and report["db"]["size_bytes"] > 0
    assert set(report["celery"]["queues"]) == {"ticks", "orders", "maintenance"}
    screen = ttquant(env, "status")
    assert screen.returncode == 0 and f"backup    {dump}" in screen.stdout and "lag       ETHUSDT=" in screen.stdout

    target = make_database("cli_rs")
    done = ttquant(env, "restore", str(dump), "--into", target)
    assert done.returncode == 0, done.stderr
    assert "[" in done.stderr and "processing data for table" in done.stderr  # the progress display
    expected = counts(src)
    assert expected["market_data"] == 250 and expected["metrics"] == 1
    assert counts(target) == expected
    assert json.loads(done.stdout)["row_counts"] == {k: v for k, v in expected.items()
                                                      if k in json.loads(done.stdout)["row_counts"]}

    # a second restore into the same (now full) database is refused, naming why
    again = ttquant(env, "restore", str(dump), "--into", target)
    assert again.returncode == 1 and "not empty" in again.stderr
    assert counts(target) == expected


def test_cli_restore_rejects_a_bad_target_uri(tmp_path: Path) -> None:
    out = ttquant({"TTQUANT_HOME": str(tmp_path)}, "restore", str(tmp_path / "x.dump"), "--into", "mysql://h/db")
    assert out.returncode == 2 and "postgresql://" in out.stderr


def test_status_follows_the_exchange_the_feed_stores(make_database: Callable[..., str], redis_url: str,
                                                     tmp_path: Path) -> None:
    """`ttquant up --source sim` stores exchange `sim`; status shows its lag, not EXCHANGE's (binance)."""
    from ttquant_tasks.feed.stats import write_stats
    from ttquant_tasks.settings import Settings
    from ttquant_tasks.status import collect

    db = make_database("st_ex")
    migrate.init_db(db, "plain")
    eng = make_engine(db)
    t0 = time.time_ns()
    insert_ticks(eng, [Tick("sim", "BTCUSDT", i, "64000.5", "0.1", t0 + i, t0 + i + 1) for i in range(1, 11)])
    eng.dispose()
    settings = Settings.from_env({"DB_URI": db, "CELERY_BROKER_URL": redis_url, "TTQUANT_HOME": str(tmp_path)})
    assert set(collect(settings)["db"]["lag_s"]) == set()  # no feed stats: EXCHANGE (binance) has no ticks
    write_stats(settings.feed_stats_path, {"counts": {"exchange": "sim", "ticks": 10}, "time": time.time(), "pid": 1})
    assert set(collect(settings)["db"]["lag_s"]) == {"BTCUSDT"}
