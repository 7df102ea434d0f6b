"""Parked chunks and dead letters.

* **Parked**: a payload whose retry budget is spent (database down longer than the retries) or
  that was redelivered too often.  It waits as an ordinary Celery message in the ``parked`` queue,
  which no worker consumes, until :func:`flush` moves it back (when the database answers).
* **Dead letter**: a payload that can never succeed (malformed).  Stored in the ``dead_letters``
  table with the reason; never retried.  If even that insert fails, the payload is parked instead,
  so nothing is dropped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from amqp.exceptions import NotFound
from kombu.exceptions import ChannelError, ContentDisallowed, DecodeError

from ..errors import BrokerUnavailable, is_retryable
from .app import PARKED, queue

if TYPE_CHECKING:
    from celery import Celery

    from .app import TTQuantCelery

log = logging.getLogger(__name__)

PARK_REASON_HEADER = "ttquant_park_reason"


def park(app: Celery, task_name: str, payload: Any, reason: str) -> None:
    """Publish ``payload`` for ``task_name`` to the ``parked`` queue (raises if the broker is away)."""
    app.send_task(task_name, args=[payload], queue=queue(PARKED), headers={PARK_REASON_HEADER: reason[:500]})


def dead_letter(app: TTQuantCelery, task_name: str, payload: Any, reason: str) -> None:
    """Record a permanently failing payload in ``dead_letters``; park it if the database refuses."""
    from ..storage.engine import get_engine
    from ..storage.writers import insert_dead_letter

    try:
        insert_dead_letter(get_engine(app.settings.db_uri), task_name, reason, payload)
    except Exception as exc:
        log.error("dead letter insert failed (%s); parking instead", exc)
        park(app, task_name, payload, reason=f"dead letter insert failed: {exc}; original: {reason}")


def queue_depths(app: Celery, names: tuple[str, ...]) -> dict[str, int | None]:
    """Messages ready in each queue: 0 when the queue does not exist (Redis drops empty lists,
    RabbitMQ answers NOT_FOUND for an undeclared queue), None when it cannot be asked."""
    depths: dict[str, int | None] = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=2, interval_start=0, interval_step=0.5, timeout=5)
        for name in names:
            channel = conn.channel()
            try:
                _, count, _ = channel.queue_declare(queue=name, passive=True)
                depths[name] = int(count)
            except Exception as exc:  # amqp: NOT_FOUND closes the channel
                not_found = isinstance(exc, NotFound | ChannelError) and (
                    "NOT_FOUND" in str(exc) or "no queue" in str(exc).lower() or isinstance(exc, NotFound))
                log.debug("queue %s: %s", name, exc)
                depths[name] = 0 if not_found else None
            finally:
                try:
                    channel.close()
                except Exception:
                    log.debug("closing channel failed", exc_info=True)
    return depths


def database_answers(uri: str | None) -> bool:
    """True when the database accepts a connection and a trivial query."""
    from sqlalchemy import text

    from ..storage.engine import get_engine

    try:
        with get_engine(uri).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception as exc:
        if not is_retryable(exc):
            log.warning("database check failed: %s", exc)
        return False


def flush(app: TTQuantCelery, limit: int = 100_000, check_db: bool = True) -> dict[str, Any]:
    """Move up to ``limit`` parked messages back to their work queues.

    Does nothing while the database does not answer (the chunks would only be parked again).
    Each message is re-sent (routed by task name, with a fresh retry budget) *before* it is acked
    in ``parked``: a crash in between leaves a copy in both places, which the idempotent writes
    absorb.  A message that is not JSON is refused (logged and dropped), never executed.
    """
    if check_db and not database_answers(app.settings.db_uri):
        return {"moved": 0, "refused": 0, "database": "down", **_remaining(app)}
    moved = refused = 0
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, interval_start=0, interval_step=0.5, timeout=5)
            bound = queue(PARKED)(conn.default_channel)
            bound.declare()
            while moved + refused < limit:
                msg = bound.get(no_ack=False, accept=["json"])
                if msg is None:
                    break
                try:
                    body = msg.decode()
                    task_name = msg.headers["task"]
                    args, kwargs = body[0], body[1]
                except (ContentDisallowed, DecodeError, KeyError, IndexError, TypeError) as exc:
                    log.error("parked message refused (%s, content type %r): dropped", exc, msg.content_type)
                    msg.ack()
                    refused += 1
                    continue
                app.send_task(task_name, args=args, kwargs=kwargs)
                msg.ack()
                moved += 1
    except Exception as exc:
        if is_retryable(exc) or isinstance(exc, OSError):
            raise BrokerUnavailable(f"flush: broker unavailable: {exc}") from exc
        raise
    return {"moved": moved, "refused": refused, "database": "up", **_remaining(app)}


def _remaining(app: Celery) -> dict[str, int | None]:
    return {"parked": queue_depths(app, (PARKED,))[PARKED]}
