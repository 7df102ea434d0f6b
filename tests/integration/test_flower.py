"""``ttquant up --flower``: Flower as one more child of ``up``, password-protected, loopback by default.

Only 127.0.0.1 is ever contacted (proxies disabled): the non-loopback case is refused before anything
listens, so no traffic goes anywhere else.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest
import redis

from tests.support.procfile import procfile
from tests.support.services import free_port
from tests.support.waiting import wait_for
from ttquant_tasks.errors import ConfigError
from ttquant_tasks.up import FlowerOptions, flower_argv, flower_env, flower_options, is_loopback

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DSN_SECRET = "dsn-secret-5f3a"
FLOWER_AUTH = "ops:flower-pw-9c1e"
# No proxy handler: urllib would otherwise honour http_proxy and send our requests elsewhere.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- pure checks


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "::1", "[::1]"])
def test_loopback_addresses(address: str) -> None:
    assert is_loopback(address)


@pytest.mark.parametrize("address", ["0.0.0.0", "", "::", "10.0.0.5", "192.168.1.2", "example.org", "fe80::1"])
def test_other_addresses_are_not_loopback(address: str) -> None:
    assert not is_loopback(address)


def test_auth_required_beyond_loopback_optional_on_it() -> None:
    with pytest.raises(ConfigError, match="FLOWER_BASIC_AUTH: must be set") as exc:
        flower_options("0.0.0.0", 5566, None)
    assert exc.value.key == "FLOWER_BASIC_AUTH"
    with pytest.raises(ConfigError, match="FLOWER_BASIC_AUTH"):
        flower_options("10.1.2.3", 5566, "")  # empty is unset
    options, warning = flower_options("0.0.0.0", 5566, FLOWER_AUTH)
    assert warning is None and options.basic_auth == FLOWER_AUTH
    options, warning = flower_options("127.0.0.1", 5566, None)
    assert warning is not None and "FLOWER_BASIC_AUTH" in warning and options.basic_auth is None
    assert flower_options("127.0.0.1", 5566, FLOWER_AUTH)[1] is None


@pytest.mark.parametrize("auth", ["nocolon-pw", ":only-pw", "user-only:", "a:b,broken-pw", " :blank-pw"])
def test_malformed_auth_is_refused_without_echoing_it(auth: str) -> None:
    with pytest.raises(ConfigError, match="FLOWER_BASIC_AUTH: must be user:password") as exc:
        flower_options("127.0.0.1", 5566, auth)
    assert "-pw" not in str(exc.value) and "user-only" not in str(exc.value)


def test_bad_port_is_refused() -> None:
    for port in (0, 65536):
        with pytest.raises(ConfigError, match="--flower-port"):
            flower_options("127.0.0.1", port, None)


def test_command_line_is_bounded_and_carries_no_password() -> None:
    options = FlowerOptions("127.0.0.1", 5600, FLOWER_AUTH)
    argv = flower_argv(options)
    assert argv[1:] == ["-m", "celery", "flower", "--address=127.0.0.1", "--port=5600", "--max_tasks=10000"]
    assert not any("flower-pw" in arg for arg in argv) and "flower-pw" not in repr(options)
    broker = "redis://:broker-pw@127.0.0.1:6379/3"
    assert flower_env({"FLOWER_BASIC_AUTH": "stale:x", "A": "1"}, options, broker) == {
        "FLOWER_BASIC_AUTH": FLOWER_AUTH, "A": "1", "CELERY_BROKER_URL": broker}
    assert flower_env({"FLOWER_BASIC_AUTH": "", "A": "1", "CELERY_BROKER_URL": "stale"},
                      FlowerOptions("127.0.0.1", 1, None), broker) == {"A": "1", "CELERY_BROKER_URL": broker}


# --------------------------------------------------------------------------- ttquant up --flower


def with_password(dsn: str) -> str:
    """``dsn`` with the password DSN_SECRET when it has none (trust auth ignores it): a secret to look for."""
    parts = urlsplit(dsn)
    if parts.password:
        return dsn
    netloc = f"{parts.username or 'postgres'}:{DSN_SECRET}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc))


def get(port: int, path: str, auth: str | None = None) -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH (never another host); (status, body)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with LOCAL.open(request, timeout=10) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except OSError:
        return 0, ""  # not listening yet


def up_env(schema_db: str, redis_url: str, stack_env: Callable[..., dict[str, str]], **extra: str) -> dict[str, str]:
    md, pull, trade = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    return {**env, **stack_env(with_password(schema_db), redis_url,
                               ZMQ_PUB_ENDPOINT=f"tcp://127.0.0.1:{md}", TTQUANT_MD_CONNECT=f"tcp://127.0.0.1:{md}",
                               ZMQ_PULL_ENDPOINT=f"tcp://127.0.0.1:{pull}", ZMQ_TRADE_ENDPOINT=f"tcp://127.0.0.1:{trade}",
                               **extra)}


def stop_stray_flower(out: str, port: int) -> None:
    """Safety net if ``up`` died without stopping its Flower: kill that pid, if it is still our Flower."""
    match = re.search(r"flower pid (\d+)", out)
    if match is None:
        return
    try:
        proc = psutil.Process(int(match.group(1)))
        if "flower" in proc.cmdline() and f"--port={port}" in proc.cmdline():
            proc.kill()
    except psutil.Error:
        pass


@pytest.fixture
def run_up() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "ttquant_tasks.cli", "up", "--source", "sim", "--no-gateway",
                                 "--symbols", "BTCUSDT", "--rate", "50", "--duration", "150", *args],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def finish(up: subprocess.Popen[str], port: int) -> tuple[str, str]:
    if up.poll() is None:
        up.send_signal(signal.SIGINT)  # as Ctrl-C
    out, err = up.communicate(timeout=120)
    stop_stray_flower(out, port)
    return out, err


def test_up_runs_flower_with_basic_auth(schema_db: str, redis_url: str, stack_env: Callable[..., dict[str, str]],
                                        run_up: Callable[..., subprocess.Popen[str]]) -> None:
    port = free_port()
    exchange = f"fl{time.time_ns() % 10**9}"
    env = up_env(schema_db, redis_url, stack_env, FLOWER_BASIC_AUTH=FLOWER_AUTH)
    up = run_up(env, "--exchange", exchange, "--flower", "--flower-port", str(port))
    try:
        wait_for(lambda: up.poll() is not None or get(port, "/")[0] != 0, timeout=120, what="Flower listening")
        assert up.poll() is None, up.stderr.read() if up.stderr else ""
        assert get(port, "/")[0] == 401
        assert get(port, "/", "ops:wrong-password")[0] == 401
        assert get(port, "/api/tasks")[0] == 401
        assert get(port, "/", FLOWER_AUTH)[0] == 200
        # The workers of `up` run with task events on from the start (-E); Flower would otherwise only
        # see tasks after its own enable_events broadcast reached them.
        workers = [c.cmdline() for c in psutil.Process(up.pid).children() if "worker" in c.cmdline()]
        assert len(workers) == 3 and all("-E" in argv for argv in workers), workers
        # Nothing secret on Flower's command line (any local user can read it): not the broker URL either.
        flowers = [c.cmdline() for c in psutil.Process(up.pid).children() if "flower" in c.cmdline()]
        assert len(flowers) == 1 and not any("://" in arg or "flower-pw" in arg for arg in flowers[0]), flowers
        # The write tasks of this run show up in Flower.
        body = wait_for(lambda: (r := get(port, "/api/tasks?limit=50", FLOWER_AUTH))[0] == 200
                        and json.loads(r[1]) and r[1], timeout=90, what="tasks in Flower's /api/tasks")
        tasks = json.loads(body)
        assert any(t.get("name", "").startswith("ttquant.") for t in tasks.values()), body[:2000]
        assert DSN_SECRET not in body and urlsplit(env["DB_URI"]).password not in body
        assert "flower-pw" not in body
    finally:
        out, err = finish(up, port)
    assert up.returncode == 0, out[-2000:] + err[-2000:]
    assert f"Flower on http://127.0.0.1:{port}/ (basic auth)" in out
    assert "flower-pw" not in out + err and DSN_SECRET not in out + err
    assert get(port, "/")[0] == 0  # Flower stopped with the stack


def test_up_flower_on_loopback_without_auth_warns(schema_db: str, redis_url: str,
                                                  stack_env: Callable[..., dict[str, str]],
                                                  run_up: Callable[..., subprocess.Popen[str]]) -> None:
    port = free_port()
    up = run_up(up_env(schema_db, redis_url, stack_env), "--flower", "--flower-address", "127.0.0.1",
                "--flower-port", str(port))
    try:
        wait_for(lambda: up.poll() is not None or get(port, "/")[0] != 0, timeout=120, what="Flower listening")
        assert get(port, "/")[0] == 200
    finally:
        out, err = finish(up, port)
    assert up.returncode == 0, out[-2000:] + err[-2000:]
    assert "warning: Flower on 127.0.0.1" in err and "FLOWER_BASIC_AUTH" in err


def test_up_refuses_flower_beyond_loopback_without_auth(schema_db: str, redis_url: str,
                                                        stack_env: Callable[..., dict[str, str]],
                                                        run_up: Callable[..., subprocess.Popen[str]]) -> None:
    port = free_port()
    up = run_up(up_env(schema_db, redis_url, stack_env), "--flower", "--flower-address", "0.0.0.0",
                "--flower-port", str(port))
    out, err = up.communicate(timeout=60)
    assert up.returncode == 2, out + err
    assert "FLOWER_BASIC_AUTH" in err and "0.0.0.0" in err
    assert "ttquant up: database" not in out  # refused before anything started


# --------------------------------------------------------------------------- the Procfile's flower line


def test_procfile_flower_refuses_to_start_without_credentials(redis_url: str) -> None:
    env = {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "CELERY_BROKER_URL": redis_url}
    done = subprocess.run(["sh", "-c", procfile()["flower"]], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode != 0 and "set FLOWER_BASIC_AUTH=user:password" in done.stderr, done.stderr


def test_procfile_flower_runs_with_auth_and_no_secret_on_its_command_line(redis_url: str) -> None:
    """The line as honcho runs it (``sh -c``): Flower asks for the password, and neither the password
    nor the broker URL can be read off its command line; it reaches the broker from the environment."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "CELERY_"))},
           "PATH": os.path.dirname(sys.executable) + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
           "CELERY_BROKER_URL": redis_url, "FLOWER_BASIC_AUTH": FLOWER_AUTH, "FLOWER_PORT": str(port)}
    proc = subprocess.Popen(["sh", "-c", procfile()["flower"]], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or get(port, "/")[0] != 0, timeout=120, what="Flower listening")
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert get(port, "/")[0] == 401
        assert get(port, "/", FLOWER_AUTH)[0] == 200
        # `exec`: the shell became Flower, so signals from honcho reach Flower itself.
        cmdline = psutil.Process(proc.pid).cmdline()
        assert "flower" in cmdline and f"--port={port}" in cmdline, cmdline
        assert not any("://" in arg or "flower-pw" in arg for arg in cmdline), cmdline
        # Flower reads queue lengths from the broker named only in the environment: this test's Redis db.
        redis.Redis.from_url(redis_url).lpush("celery", "m1", "m2", "m3")
        status, body = get(port, "/api/queues/length", FLOWER_AUTH)
        assert status == 200 and {"name": "celery", "messages": 3} in json.loads(body)["active_queues"], body[:500]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
