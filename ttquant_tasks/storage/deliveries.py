"""Redelivery counts of chunks (table ``chunk_deliveries``), to stop poison chunks looping."""

from __future__ import annotations

from sqlalchemy import Engine, text

from ..errors import DatabaseUnavailable, is_retryable

_BUMP = text(
    "INSERT INTO chunk_deliveries (chunk_id) VALUES (:chunk_id) "
    "ON CONFLICT (chunk_id) DO UPDATE SET deliveries = chunk_deliveries.deliveries + 1, last_seen = now() "
    "RETURNING deliveries"
)


def bump_delivery(engine: Engine, chunk_id: str) -> int:
    """Count one more (re)delivery of ``chunk_id``; returns the total so far (first call: 1).

    Called only for redelivered messages, so the normal path never touches this table.
    """
    try:
        with engine.begin() as conn:
            return int(conn.execute(_BUMP, {"chunk_id": chunk_id}).scalar_one())
    except Exception as exc:
        if is_retryable(exc):
            raise DatabaseUnavailable(f"counting deliveries of {chunk_id}: {exc}") from exc
        raise
