"""One lock per periodic job, held in PostgreSQL, so two beat processes never run a job twice at once.

A session-level advisory lock (``pg_try_advisory_lock``) on a stable 64-bit hash of the job name is
taken on a connection of its own and held for the whole job.  It is released when the block ends,
and also by the server when that connection dies (a killed worker cannot leave a stale lock).
The lock is *try*, never wait: the second runner learns at once that the job is busy and skips it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
import sqlalchemy.exc as saexc

from ..errors import ConfigError
from ..storage.engine import db_errors

_NAMESPACE = b"ttquant.job:"


def lock_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of job ``name`` (stable across processes and hosts).

    ``hashtext`` or Python's ``hash`` would do within one process only (``hash`` is salted per
    process), so a fixed digest is used.
    """
    if not name or not name.strip():
        raise ConfigError("job", "a job lock needs a non-empty name")
    digest = hashlib.blake2b(_NAMESPACE + name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def job_lock(engine: sa.Engine, name: str, wait_s: float = 0.0) -> Iterator[bool]:
    """``with job_lock(engine, "backup") as acquired:`` -- ``acquired`` False: another process runs it.

    ``wait_s`` > 0: keep trying that long (every 0.5 s) before giving up.

    The lock lives on a dedicated pooled connection that is not in a transaction while the job
    runs (no "idle in transaction" session holding back vacuum).  Raises
    :class:`~ttquant_tasks.errors.DatabaseUnavailable` when the database cannot be reached.
    """
    key = lock_key(name)
    with db_errors(f"job_lock({name})"):
        conn = engine.connect()
    try:
        deadline = time.monotonic() + wait_s
        while True:
            with db_errors(f"job_lock({name})"):
                acquired = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
                conn.commit()
            if acquired or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        try:
            yield acquired
        finally:
            if acquired:
                _unlock(conn, key)
    finally:
        conn.close()


def _unlock(conn: sa.Connection, key: int) -> None:
    try:
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        conn.commit()
    except saexc.DBAPIError:
        # The session is broken (and with it the lock), or the unlock failed: never hand a
        # connection that may still hold the lock back to the pool.
        conn.invalidate()
