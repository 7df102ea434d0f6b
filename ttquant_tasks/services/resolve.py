"""Fill in the database and broker URLs from the embedded services when they are not configured.

``DB_URI`` unset -> the embedded PostgreSQL under ``$TTQUANT_HOME/postgres``;
``CELERY_BROKER_URL`` unset -> the embedded Redis under ``$TTQUANT_HOME/redis``.
A set variable always wins and nothing embedded is started for it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..settings import Settings
from .embedded import EmbeddedPostgres, EmbeddedRedis, pg_bin_dir, redis_server_path


def postgres_root(home: Path) -> Path:
    """Directory of the embedded PostgreSQL under a ``TTQUANT_HOME``."""
    return Path(home) / "postgres"


def redis_root(home: Path) -> Path:
    """Directory of the embedded Redis under a ``TTQUANT_HOME``."""
    return Path(home) / "redis"


def _services(home: Path) -> dict[str, EmbeddedPostgres | EmbeddedRedis]:
    return {"postgres": EmbeddedPostgres(postgres_root(home)), "redis": EmbeddedRedis(redis_root(home))}


def _embedded_url(service: EmbeddedPostgres | EmbeddedRedis, start: bool) -> str:
    if start:
        return service.start()
    url = service.url()
    if url is None:
        raise ConfigError(
            service.key,
            f"not set, and the embedded {service.name} under {service.root} is not running: "
            f"start the embedded services first (they start on demand), or set {service.key}",
        )
    return url


def resolve(settings: Settings, *, start: bool = True, broker: bool = True) -> Settings:
    """``settings`` with ``db_uri`` / ``broker_url`` filled from the embedded services where None.

    ``broker=False`` resolves the database only (commands that never talk to the broker must not
    start an embedded Redis as a side effect); ``broker_url`` then stays as it was.

    ``start=True`` starts a service that is not running (idempotent, reuses a running one);
    ``start=False`` only uses running ones and raises :class:`ConfigError` naming ``DB_URI`` or
    ``CELERY_BROKER_URL`` otherwise.  Also raises ConfigError when the ``embedded`` extra is missing.
    Returns ``settings`` itself when both are set.
    """
    changes: dict[str, Any] = {}
    if settings.db_uri is None:
        pg_bin_dir()  # ConfigError naming DB_URI when the extra is not installed
        changes["db_uri"] = _embedded_url(EmbeddedPostgres(postgres_root(settings.home)), start)
    if broker and settings.broker_url is None:
        redis_server_path()  # ConfigError naming CELERY_BROKER_URL when the extra is not installed
        changes["broker_url"] = _embedded_url(EmbeddedRedis(redis_root(settings.home)), start)
    return dataclasses.replace(settings, **changes) if changes else settings


def stop_all(home: Path) -> dict[str, bool]:
    """Stop the embedded services under ``home``: name -> True if it was running."""
    return {name: service.stop() for name, service in _services(home).items()}


def status_all(home: Path) -> dict[str, dict[str, Any]]:
    """Name -> ``{"running": bool, "pid": int | None, "url": str | None}`` for ``home``'s services."""
    return {name: service.status() for name, service in _services(home).items()}
