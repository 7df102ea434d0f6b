"""Private PostgreSQL and Redis servers that fault tests may stop and start at will."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import free_port


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
