"""One SQLAlchemy engine per process and database, psycopg2 underneath.

Pools must not cross ``fork()``: a child that used its parent's pooled sockets would interleave
bytes with the parent on the same server connection.  :func:`get_engine` caches by
``(pid, uri)``, so a forked child (Celery prefork worker) builds its own engine on first use, and
:func:`dispose_after_fork` (also registered with ``os.register_at_fork``) drops the inherited
engines *without closing* their connections, which still belong to the parent
(SQLAlchemy pooling docs, "Using Connection Pools with Multiprocessing").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import sqlalchemy as sa
import sqlalchemy.exc as saexc

from ..errors import ConfigError, DatabaseUnavailable, PermanentError, TTQuantError

CONNECT_TIMEOUT_S = 5
CONNECT_ARGS: dict[str, object] = {
    "connect_timeout": CONNECT_TIMEOUT_S,
    "application_name": "ttquant-tasks",
    # TCP keepalives: a server that vanished without a FIN is noticed in ~1 min, not hours.
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
_SCHEMES = {
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "postgresql+psycopg2": "postgresql+psycopg2",
}

_engines: dict[tuple[int, str], sa.Engine] = {}
_lock = threading.Lock()


def sqlalchemy_url(uri: str | None) -> str:
    """``uri`` with the psycopg2 driver named (``postgres://`` and ``postgresql://`` accepted).

    Raises :class:`ConfigError` (key ``DB_URI``) for a missing URI or another scheme.
    """
    if not uri:
        raise ConfigError("DB_URI", "no database URI given")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ConfigError("DB_URI", f"expected postgresql:// or postgres://, got scheme {scheme!r}")
    return f"{_SCHEMES[scheme.lower()]}://{rest}"


def make_engine(uri: str | None) -> sa.Engine:
    """A new engine for ``uri``: psycopg2, ``pool_pre_ping`` (a server restart costs one retry,
    not an error), a 5 s connect timeout and TCP keepalives so a vanished server is noticed."""
    return sa.create_engine(
        sqlalchemy_url(uri),
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args=dict(CONNECT_ARGS),
    )


def connect_raw(engine: sa.Engine) -> psycopg2.extensions.connection:
    """A new psycopg2 connection to ``engine``'s database, *outside* its pool, with the same
    connect arguments as :func:`make_engine` (timeout, keepalives, application name).

    The caller owns it: close it in the process that opened it, never in a forked child.
    """
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    conn: psycopg2.extensions.connection = psycopg2.connect(*cargs, **{**cparams, **CONNECT_ARGS})
    return conn


def get_engine(uri: str | None) -> sa.Engine:
    """The engine of this process for ``uri`` (created on first use)."""
    key = (os.getpid(), sqlalchemy_url(uri))
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(uri)
        return engine


def dispose_after_fork() -> None:
    """Forget the engines inherited from a parent process (call in the child after ``fork``).

    ``dispose(close=False)`` drops the pool without closing the parent's sockets.  Runs
    automatically in every forked child; calling it again is harmless.
    """
    global _lock
    _lock = threading.Lock()  # the parent's lock may have been held by another thread at fork time
    pid = os.getpid()
    for key in [k for k in _engines if k[0] != pid]:
        _engines.pop(key).dispose(close=False)


def dispose_all() -> None:
    """Close every engine of this process (tests, clean shutdown)."""
    pid = os.getpid()
    with _lock:
        for key in [k for k in _engines if k[0] == pid]:
            _engines.pop(key).dispose()


def translate_error(exc: BaseException, what: str) -> TTQuantError | None:
    """Our error for a driver/SQLAlchemy exception, or None when it is not one we classify.

    Connection-level (refused, dropped, server shutting down, pool timeout, statement cancelled)
    -> :class:`DatabaseUnavailable`; bad data and constraint violations -> :class:`PermanentError`.
    ``what`` names the operation in the message.
    """
    if isinstance(exc, TTQuantError):
        return None
    orig: BaseException = exc
    if isinstance(exc, saexc.DBAPIError):
        if exc.connection_invalidated:
            return DatabaseUnavailable(f"{what}: database connection lost: {exc.orig}")
        orig = exc.orig if isinstance(exc.orig, BaseException) else exc
    if isinstance(orig, psycopg2.OperationalError | psycopg2.InterfaceError):
        return DatabaseUnavailable(f"{what}: database unavailable: {_first_line(orig)}")
    if isinstance(orig, saexc.TimeoutError | saexc.DisconnectionError):
        return DatabaseUnavailable(f"{what}: database unavailable: {_first_line(orig)}")
    if isinstance(orig, psycopg2.errors.UndefinedTable | psycopg2.errors.UndefinedFunction):
        # The schema is missing (no `ttquant db init` yet): an operator fixes that, so retry and
        # park rather than dead-letter every chunk.
        return DatabaseUnavailable(f"{what}: schema missing, run `ttquant db init`: {_first_line(orig)}")
    if isinstance(orig, psycopg2.DataError | psycopg2.IntegrityError):
        return PermanentError(f"{what}: rejected by the database: {_first_line(orig)}")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def db_errors(what: str) -> Iterator[None]:
    """Translate driver exceptions raised inside the block (``raise ... from exc``)."""
    try:
        yield
    except Exception as exc:
        ours = translate_error(exc, what)
        if ours is None:
            raise
        raise ours from exc


os.register_at_fork(after_in_child=dispose_after_fork)
