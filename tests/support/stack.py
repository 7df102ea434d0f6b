"""Fixtures for pipeline and fault tests: a schema'd database, subprocess env, real worker processes,
and private PostgreSQL/Redis servers that a test may stop and start."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import free_port
from tests.support.worker import WorkerProcess
from ttquant_tasks.settings import Settings


@pytest.fixture(scope="session")
def schema_db(make_database: Callable[..., str]) -> str:
    """A database of this run with the schema applied (TimescaleDB flavour when available)."""
    from ttquant_tasks.storage.migrate import init_db

    uri = make_database("pipe")
    init_db(uri)
    return uri


@pytest.fixture
def stack_env(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Environment for worker/feed subprocesses: fast retries so outage tests stay short."""

    def make(db_uri: str, broker_url: str, **extra: str) -> dict[str, str]:
        env = {
            "DB_URI": db_uri,
            "CELERY_BROKER_URL": broker_url,
            "TTQUANT_HOME": str(tmp_path / "home"),
            "TTQUANT_WRITE_RETRIES": "2",
            "TTQUANT_RETRY_BACKOFF_MAX": "1",
            "TTQUANT_LOG_LEVEL": "INFO",
        }
        env.update(extra)
        return env

    return make


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(env: dict[str, str], **kwargs: Any) -> WorkerProcess:
        w = WorkerProcess(env, tmp_path / "logs", **kwargs).start()
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


def flavoured_engine(request: pytest.FixtureRequest, make_database: Callable[..., str],
                     prefix: str) -> Iterator[Any]:
    """Body of a fixture parametrized ``["timescale", "plain"]``: an engine on a new database of
    that flavour (skipped when TimescaleDB is not installable), disposed at the end."""
    from ttquant_tasks.storage import migrate
    from ttquant_tasks.storage.engine import make_engine

    uri = make_database(f"{prefix}_{request.param}")
    if request.param == "timescale" and not migrate.timescale_installable(uri):
        pytest.skip("TimescaleDB is not installable on this PostgreSQL server")
    result = migrate.init_db(uri, "auto" if request.param == "timescale" else "plain")
    assert result["flavour"] == request.param  # auto must pick TimescaleDB on this machine
    eng = make_engine(uri)
    yield eng
    eng.dispose()


def client_app(env: dict[str, str]) -> Any:
    """A Celery app in the test process, configured like the worker (for publishing)."""
    from ttquant_tasks.tasks.app import make_app

    return make_app(Settings.from_env(env))


@pytest.fixture
def private_root() -> Iterator[Path]:
    # Not tmp_path: pytest resets /tmp/pytest-of-root to 0700, which locks out the unprivileged
    # user the embedded PostgreSQL runs as when we are root.
    root = Path(tempfile.mkdtemp(prefix="ttq-fault-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_pg(private_root: Path) -> Iterator[Any]:
    from ttquant_tasks.services.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(private_root / "pg", port=free_port())
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture
def private_redis(private_root: Path) -> Iterator[Any]:
    from ttquant_tasks.services.embedded import EmbeddedRedis

    r = EmbeddedRedis(private_root / "redis", port=free_port())
    r.start()
    yield r
    r.stop()
