"""Session-wide service fixtures: private databases, a private Redis db, a private RabbitMQ vhost."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import services

_GUARD_HOME: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Point ``TTQUANT_HOME`` at a private directory for the whole run.

    A test that resolves services without a home of its own must never start (or use) embedded
    services under the user's ``~/.ttquant``; whatever it starts here is stopped at the end.
    """
    global _GUARD_HOME
    _GUARD_HOME = Path(tempfile.mkdtemp(prefix="ttquant-test-home-"))
    os.environ["TTQUANT_HOME"] = str(_GUARD_HOME)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _GUARD_HOME is None:
        return
    from ttquant_tasks.services import stop_all

    try:
        stop_all(_GUARD_HOME)
    finally:
        shutil.rmtree(_GUARD_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def test_root() -> Iterator[Path]:
    root = services.tmp_root()
    yield root
    services.stop_started()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_uri(test_root: Path) -> Iterator[str]:
    uri = services.pg_admin_uri(test_root)
    yield uri
    services.drop_databases(uri)


@pytest.fixture(scope="session")
def make_database(pg_admin_uri: str) -> Callable[..., str]:
    """Factory: a new empty database of this run; returns its DSN.  Dropped at session end."""

    def make(prefix: str = "t") -> str:
        return services.create_database(pg_admin_uri, prefix)

    return make


@pytest.fixture(scope="session")
def redis_url(test_root: Path) -> Iterator[str]:
    url = services.claim_redis_db(services.redis_base_url(test_root))
    yield url
    services.release_redis_db(url)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = services.amqp_vhost_url()
    if url is None:
        pytest.skip("RabbitMQ not available on 127.0.0.1:5672")
    yield url
    services.drop_amqp_vhost(url)


pytest_plugins = ["tests.support.stack"]
