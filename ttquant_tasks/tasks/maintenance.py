"""Maintenance tasks (``maintenance`` queue): thin wrappers around plain functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Task

from . import parking

if TYPE_CHECKING:
    from .app import TTQuantCelery


def register(app: TTQuantCelery) -> None:
    @app.task(name="ttquant.flush", bind=True, acks_late=True, ignore_result=True)
    def flush(self: Task, limit: int = 100_000) -> dict[str, Any]:
        """Move parked chunks back to their queues when the database answers."""
        return parking.flush(self.app, limit=limit)
