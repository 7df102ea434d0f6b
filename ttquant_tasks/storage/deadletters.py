"""Reading and removing dead letters (payloads a task could not store, kept with the reason)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from . import schema
from .engine import db_errors


def summary(engine: sa.Engine) -> list[dict[str, Any]]:
    """Dead letters grouped by task and reason: count, first and last time."""
    dl = schema.dead_letters
    query = (sa.select(dl.c.task, dl.c.reason, sa.func.count().label("count"),
                       sa.func.min(dl.c.time).label("first"), sa.func.max(dl.c.time).label("last"))
             .group_by(dl.c.task, dl.c.reason).order_by(sa.func.count().desc()))
    with db_errors("dead letter summary"), engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def pending(engine: sa.Engine, task: str | None = None, batch: int = 500) -> Iterator[tuple[int, str, Any]]:
    """``(id, task, payload)`` of the dead letters (of ``task``), oldest first, in batches."""
    dl = schema.dead_letters
    last_id = 0
    while True:
        query = sa.select(dl.c.id, dl.c.task, dl.c.payload).where(dl.c.id > last_id).order_by(dl.c.id).limit(batch)
        if task:
            query = query.where(dl.c.task == task)
        with db_errors("dead letters"), engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return
        for r in rows:
            yield int(r.id), str(r.task), r.payload
        last_id = int(rows[-1].id)


def remove(engine: sa.Engine, dead_letter_id: int) -> None:
    with db_errors("remove dead letter"), engine.begin() as conn:
        conn.execute(sa.delete(schema.dead_letters).where(schema.dead_letters.c.id == dead_letter_id))
