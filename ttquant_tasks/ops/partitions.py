"""Partitions ahead and the TimescaleDB policies, whichever the schema flavour (sql/003).

Plain PostgreSQL: ``ttquant_ensure_partitions(days_ahead)`` creates the UTC day partitions of
``market_data`` from today to today + ``days_ahead`` (idempotent; the TimescaleDB flavour's function
is a no-op, chunks are created by inserts).  TimescaleDB: the compression policy of sql/003 and the
7-day ``metrics`` retention are (re)added if missing, and the built-in 30-day ``market_data``
retention policy is *removed*: it drops chunks without archiving them, while the ``retention`` job
(:func:`ttquant_tasks.ops.retention.archive_and_drop`) drops only what it archived and verified.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..storage.engine import db_errors
from ..storage.migrate import flavour

LOCK_TIMEOUT_S = 10

_TIMESCALE_POLICIES = (
    "SELECT add_compression_policy('market_data', interval '7 days', if_not_exists => true)",
    "SELECT add_retention_policy('metrics', interval '7 days', if_not_exists => true)",
    "SELECT remove_retention_policy('market_data', if_exists => true)",
)


def ensure_partitions(engine: sa.Engine, days_ahead: int) -> dict[str, Any]:
    """Create partitions ahead / make sure the policies are right; ``{"flavour", "created"}``.

    Idempotent.  Raises :class:`~ttquant_tasks.errors.DatabaseUnavailable` when the database
    cannot be reached or the schema is missing.
    """
    with db_errors("ensure_partitions"), engine.begin() as conn:
        # ATTACH PARTITION waits for ACCESS EXCLUSIVE on the default partition, and every later
        # reader queues behind that request.  A running backup holds ACCESS SHARE in a transaction
        # that waits for its own pg_dump, which queues behind us: a deadlock PostgreSQL cannot see.
        # So give up quickly; the next run (partitions are made days ahead) tries again.
        conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'"))
        kind = flavour(conn)
        created = int(conn.execute(sa.text("SELECT ttquant_ensure_partitions(:n)"), {"n": days_ahead}).scalar_one())
        if kind == "timescale":
            for stmt in _TIMESCALE_POLICIES:
                conn.execute(sa.text(stmt))
    return {"flavour": kind, "created": created}
