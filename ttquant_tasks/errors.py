"""The error tree of ttquant-tasks.

    TTQuantError                      base of everything we raise on purpose
    ├── ConfigError                   a setting, CLI argument or config file value is wrong (names the key)
    ├── RetryableError                transient: database or broker unreachable, exchange 429/5xx, timeouts
    │   ├── DatabaseUnavailable       connection refused / dropped / server shutting down
    │   └── BrokerUnavailable         broker refused, hung or timed out while publishing
    └── PermanentError                retrying cannot help: malformed payload, constraint violation
        └── PayloadError              a chunk, frame or message does not have the expected shape

Driver exceptions (psycopg2, kombu, redis, websocket) are translated once, at the boundary that
catches them, with ``raise ... from exc``.  ``is_retryable`` and ``backoff`` are the only places that
decide "transient or not" and "how long to wait": everything else calls them.
"""

from __future__ import annotations

import random


class TTQuantError(Exception):
    """Base class of the errors ttquant-tasks raises on purpose."""


class ConfigError(TTQuantError, ValueError):
    """A configuration value is missing or wrong; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class RetryableError(TTQuantError):
    """A transient failure: the same call may succeed later."""


class DatabaseUnavailable(RetryableError):
    """The database refused, dropped or timed out the connection."""


class BrokerUnavailable(RetryableError):
    """The broker refused, hung or timed out while we published."""


class PermanentError(TTQuantError):
    """Retrying cannot help (bad payload, constraint violation)."""


class PayloadError(PermanentError, ValueError):
    """A chunk, frame or message does not have the expected shape."""


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is a transient failure worth retrying.

    Our own tree decides first; then the driver exceptions we know to be transient:
    psycopg2's OperationalError/InterfaceError (connection-level) and socket-level errors.
    """
    if isinstance(exc, RetryableError):
        return True
    if isinstance(exc, PermanentError):
        return False
    try:  # psycopg2 is a hard dependency, but keep this module importable without it
        import psycopg2

        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import sqlalchemy.exc as saexc

        if isinstance(exc, saexc.OperationalError | saexc.InterfaceError):
            return True
        if isinstance(exc, saexc.DBAPIError) and exc.connection_invalidated:
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, ConnectionError | TimeoutError)


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential with full jitter.

    ``min(cap, base * 2**attempt)`` scaled by a uniform factor in [0.5, 1.0], so retries of many
    chunks after one outage do not all hit the database at the same instant.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    r = (rng or random).uniform(0.5, 1.0)
    return float(ceiling * r)
