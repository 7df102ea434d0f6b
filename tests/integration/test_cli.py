"""The ``ttquant`` command as a user runs it: exit codes and messages."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ttquant_tasks.services import stop_all

pytestmark = pytest.mark.integration


def ttquant(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["feed", "--rate", "fast"], "--rate"),
        (["feed", "--rate", "-5"], "--rate"),
        (["feed", "--duration", "0"], "--duration"),
        (["feed", "--source", "nasdaq"], "--source"),
        (["db", "init", "--flavour", "mysql"], "--flavour"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(args: list[str], needle: str) -> None:
    out = ttquant(*args)
    assert out.returncode == 2
    assert needle in out.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"TTQUANT_CHUNK_SIZE": "lots"}, "TTQUANT_CHUNK_SIZE"),
        ({"DB_URI": "mysql://root:hunter2@x/db"}, "DB_URI"),
        ({"TTQUANT_SYMBOLS": "BTC/USDT"}, "TTQUANT_SYMBOLS"),
    ],
)
def test_bad_settings_exit_2_naming_the_key(env: dict[str, str], needle: str) -> None:
    out = ttquant("status", env=env)
    assert out.returncode == 2
    assert needle in out.stderr and "hunter2" not in out.stderr


def test_bad_symbols_flag() -> None:
    out = ttquant("feed", "--symbols", "BTC USDT;DROP")
    assert out.returncode == 2 and "--symbols" in out.stderr


def test_db_init_twice_is_harmless(make_database: Callable[..., str], tmp_path: Path) -> None:
    uri = make_database("cli")
    # Database-only commands never start an embedded Redis, even with no broker configured.
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    home = tmp_path / "home"
    try:
        first = subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", "db", "init"], capture_output=True,
                               text=True, timeout=120, env={**env, "DB_URI": uri, "TTQUANT_HOME": str(home)})
        assert not (home / "redis").exists(), "db init started an embedded Redis"
    finally:
        stop_all(home)
    assert first.returncode == 0, first.stderr
    second = ttquant("db", "init", env={"DB_URI": uri})
    assert second.returncode == 0, second.stderr
    assert '"applied": []' in second.stdout
    upgrade = ttquant("db", "upgrade", env={"DB_URI": uri})
    assert upgrade.returncode == 0 and '"applied": []' in upgrade.stdout
