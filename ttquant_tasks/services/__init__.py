"""Embedded default services (PostgreSQL, Redis) used when DB_URI / CELERY_BROKER_URL are unset."""

from __future__ import annotations

from .embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServiceError,
    pg_bin_dir,
    redis_server_path,
)
from .resolve import postgres_root, redis_root, resolve, status_all, stop_all

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServiceError",
    "pg_bin_dir",
    "postgres_root",
    "redis_root",
    "redis_server_path",
    "resolve",
    "status_all",
    "stop_all",
]
