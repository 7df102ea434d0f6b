"""Security: pickle refused, secrets never printed, names are data (never SQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.checks import make_ticks, stored_ids, unique_exchange
from tests.support.services import with_database
from tests.support.stack import client_app
from tests.support.waiting import wait_for
from ttquant_tasks.models import Tick, chunk_payload
from ttquant_tasks.storage.engine import get_engine
from ttquant_tasks.storage.writers import insert_ticks

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(180)]

MARKER = Path("/tmp") / f"ttq-pwned-{os.getpid()}"


class Evil:
    """Unpickling this runs a shell command: a worker that accepts pickle would create MARKER."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {MARKER}",))


@pytest.mark.parametrize("broker_fixture", ["redis_url", "amqp_url"])
def test_pickle_message_is_refused_not_executed(schema_db: str, broker_fixture: str, request: pytest.FixtureRequest,
                                                stack_env: Callable[..., dict[str, str]],
                                                start_worker: Callable[..., Any]) -> None:
    broker = request.getfixturevalue(broker_fixture)
    env = stack_env(schema_db, broker)
    worker = start_worker(env)
    app = client_app(env)
    MARKER.unlink(missing_ok=True)
    app.send_task("ttquant.write_ticks", args=[Evil()], serializer="pickle")
    exchange = unique_exchange("sec")
    app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, make_ticks(exchange, "BTCUSDT", 1, 20))])
    # The good chunk after it lands: the worker refused the pickle and kept going.
    assert wait_for(lambda: stored_ids(schema_db, exchange, "BTCUSDT")) == list(range(1, 21))
    assert not MARKER.exists(), "a pickle body was executed"
    log = worker.log()
    assert "ContentDisallowed" in log or "Refusing to deserialize" in log or "disallowed" in log.lower()


def test_passwords_never_printed(schema_db: str, redis_url: str, tmp_path: Path,
                                 stack_env: Callable[..., dict[str, str]],
                                 start_worker: Callable[..., Any]) -> None:
    """The local PostgreSQL trusts loopback, so a DSN with a password works: it must appear nowhere."""
    secret = "Sup3rS3cretPw"
    db_with_pw = schema_db.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    assert secret in db_with_pw
    env = stack_env(db_with_pw, redis_url, BINANCE_API_KEY="key-" + secret, BINANCE_API_SECRET="sec-" + secret,
                    TTQUANT_LOG_LEVEL="DEBUG")
    worker = start_worker(env)
    app = client_app(env)
    exchange = unique_exchange("pw")
    app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, make_ticks(exchange, "BTCUSDT", 1, 5))])
    wait_for(lambda: stored_ids(schema_db, exchange, "BTCUSDT"), what="chunk stored")
    full_env = {**os.environ, **env}
    outputs = [worker.log()]
    for args in (["status"], ["status", "--json"], ["db", "upgrade"], ["flush"]):
        out = subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", *args], env=full_env, capture_output=True,
                             text=True, timeout=60)
        outputs += [out.stdout, out.stderr]
    # A database that refuses: the error must name the problem without the password.
    bad = with_database(db_with_pw, "no_such_db_" + exchange)
    out = subprocess.run([sys.executable, "-m", "ttquant_tasks.cli", "db", "upgrade"],
                         env={**full_env, "DB_URI": bad}, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    outputs += [out.stdout, out.stderr]
    from ttquant_tasks.settings import Settings

    outputs.append(repr(Settings.from_env(env)))
    for text in outputs:
        assert secret not in text


def test_names_are_data_never_sql(schema_db: str, redis_url: str, stack_env: Callable[..., dict[str, str]],
                                  start_worker: Callable[..., Any]) -> None:
    nasty = "X'); DROP TABLE market_data;--"
    engine = get_engine(schema_db)
    t0 = time.time_ns()
    assert insert_ticks(engine, [Tick("sec", nasty, 1, "1.5", "2", t0, t0)]) == 1
    env = stack_env(schema_db, redis_url)
    start_worker(env)
    app = client_app(env)
    exchange = "q'uote\"ex;"
    app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, [Tick(exchange, nasty, 2, "1", "1", t0, t0)])])
    assert wait_for(lambda: stored_ids(schema_db, exchange, nasty)) == [2]
    assert stored_ids(schema_db, "sec", nasty) == [1]
