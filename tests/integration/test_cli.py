"""The ``ttquant`` command as a user runs it: exit codes and messages."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

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


def test_db_init_twice_is_harmless(make_database: Callable[..., str]) -> None:
    uri = make_database("cli")
    first = ttquant("db", "init", env={"DB_URI": uri})
    assert first.returncode == 0, first.stderr
    second = ttquant("db", "init", env={"DB_URI": uri})
    assert second.returncode == 0, second.stderr
    assert '"applied": []' in second.stdout
    upgrade = ttquant("db", "upgrade", env={"DB_URI": uri})
    assert upgrade.returncode == 0 and '"applied": []' in upgrade.stdout
