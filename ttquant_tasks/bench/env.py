"""The private services of one bench run: a fresh database and a private broker namespace.

Never user data: the run creates ``ttq_bench_<stamp>_<n>`` databases on the configured (or embedded)
PostgreSQL server and drops them at the end, and claims an *empty* Redis db number (marked with a
claim key, flushed at the end only if the claim is still ours) or a private RabbitMQ vhost.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions

from ..errors import ConfigError

_CLAIM_KEY = "ttquant-bench-claim"


def with_database(uri: str, dbname: str) -> str:
    """``uri`` pointing at database ``dbname`` (same server, user and options)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + dbname))


def _admin(uri: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(with_database(uri, "postgres"), connect_timeout=5)
    conn.autocommit = True
    return conn


class Databases:
    """Creates fresh databases next to ``uri``'s; :meth:`drop_all` removes every one it made."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.stamp = uuid.uuid4().hex[:8]
        self.made: list[str] = []

    def create(self, purpose: str) -> str:
        """A new empty database; returns its DSN.  ConfigError when the server refuses."""
        name = f"ttq_bench_{self.stamp}_{purpose}"
        try:
            with contextlib.closing(_admin(self.uri)) as conn, conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        except psycopg2.Error as exc:
            raise ConfigError("DB_URI", f"bench needs CREATE DATABASE on the server: {exc}".strip()) from exc
        self.made.append(name)
        return with_database(self.uri, name)

    def drop_all(self) -> None:
        with contextlib.closing(_admin(self.uri)) as conn, conn.cursor() as cur:
            for name in self.made:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self.made.clear()

    def server_version(self) -> str:
        with contextlib.closing(_admin(self.uri)) as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version")
            row = cur.fetchone()
        return str(row[0]) if row else "?"


@contextlib.contextmanager
def private_broker(url: str) -> Iterator[str]:
    """A broker URL of our own: an empty Redis db number or a fresh RabbitMQ vhost."""
    scheme = url.split("://", 1)[0]
    if scheme.startswith("redis"):
        import redis

        base = urlunsplit(urlsplit(url)._replace(path=""))
        claim = uuid.uuid4().hex
        for db in range(15, 0, -1):
            client = redis.Redis.from_url(f"{base}/{db}")
            if client.dbsize() == 0 and client.set(_CLAIM_KEY, claim, nx=True):
                try:
                    yield f"{base}/{db}"
                finally:
                    if client.get(_CLAIM_KEY) == claim.encode():
                        client.flushdb()
                return
        raise ConfigError("CELERY_BROKER_URL", f"no empty Redis db number at {base} for the bench")
    vhost = f"ttq_bench_{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
        parts = urlsplit(url)
        user = parts.username or "guest"
        subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError("CELERY_BROKER_URL", f"bench needs a private vhost (rabbitmqctl): {exc}") from exc
    try:
        yield urlunsplit(urlsplit(url)._replace(path="/" + vhost))
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)
