"""The Procfile under honcho: feed, workers and beat come up, ticks are persisted, SIGTERM stops all.

honcho kills every process 5 s after the first one exits (PITFALLS), so "every process comes up and
stays up" is checked by honcho's own output: no process may report that it exited before we stop
it, and after SIGTERM every process of the tree must be gone without honcho resorting to SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from tests.support.services import free_port
from tests.support.waiting import wait_for
from ttquant_tasks.storage.engine import make_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("feed", "worker_ticks", "worker_orders", "worker_maintenance", "beat")


def stored(uri: str) -> int:
    eng = make_engine(uri)
    try:
        with eng.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM market_data")).scalar_one())
    finally:
        eng.dispose()


def test_procfile_under_honcho(redis_url: str, tmp_path: Path,
                               make_database: Callable[..., str]) -> None:
    honcho = Path(sys.executable).with_name("honcho")
    if not honcho.exists():
        pytest.skip("honcho is not installed (test extra)")
    db = make_database("honcho")
    from ttquant_tasks.storage.migrate import init_db

    init_db(db)
    env_file = tmp_path / "test.env"
    env_file.write_text("\n".join([
        f"DB_URI={db}",
        f"CELERY_BROKER_URL={redis_url}",
        f"TTQUANT_HOME={tmp_path / 'home'}",
        "TTQUANT_SYMBOLS=BTCUSDT,ETHUSDT",
        "TTQUANT_FEED_SOURCE=sim",
        f"ZMQ_PUB_ENDPOINT=tcp://127.0.0.1:{free_port()}",
        f"ZMQ_PULL_ENDPOINT=tcp://127.0.0.1:{free_port()}",
        f"ZMQ_TRADE_ENDPOINT=tcp://127.0.0.1:{free_port()}",
        "TTQUANT_TICK_CONCURRENCY=1",
        "TTQUANT_METRICS_INTERVAL=2",
        f"TTQUANT_BACKUP_DIR={tmp_path / 'backups'}",
        "TTQUANT_LOG_LEVEL=INFO",
    ]) + "\n")
    log_path = tmp_path / "honcho.log"
    env = {**os.environ, "PATH": f"{honcho.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(honcho), "start", "--no-colour", "-f", str(ROOT / "Procfile"),
                                 "-e", str(env_file), *PROCESSES],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def output() -> str:
        return log_path.read_text(errors="replace")

    tree: set[int] = set()
    try:
        for name in PROCESSES:
            wait_for(lambda n=name: f"{n}.1 started (pid=" in output(), timeout=30,
                     what=f"{name} started")
        wait_for(lambda: output().count(" ready.") >= 3, timeout=90, what=f"3 workers ready:\n{output()[-3000:]}")
        wait_for(lambda: "beat: Starting" in output(), timeout=60, what="beat started")
        wait_for(lambda: stored(db) >= 200, timeout=90, what=f"ticks persisted:\n{output()[-3000:]}")
        # beat -> maintenance worker: a metrics job ran, there and nowhere else
        wait_for(lambda: "job metrics done" in output(), timeout=60, what="a metrics job run")
        assert all(" worker_maintenance.1 " in line.split("|")[0]
                   for line in output().splitlines() if "job metrics done" in line), output()[-3000:]
        assert "stopped (rc=" not in output(), f"a process exited early:\n{output()[-3000:]}"
        tree = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert len(tree) >= len(PROCESSES)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = output()
    assert "SIGKILL" not in text, f"honcho had to kill a process:\n{text[-3000:]}"
    still = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert still == [], f"processes still running after honcho stopped: {still}"
