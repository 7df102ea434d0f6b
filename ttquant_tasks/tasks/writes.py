"""Thin Celery tasks around the storage functions.

Each task: decode the JSON payload, call a plain function in :mod:`ttquant_tasks.storage`,
and decide between retry (transient), park (retry budget spent or redelivered too often) and
dead-letter (permanent).  Writes are idempotent (``ON CONFLICT DO NOTHING`` on natural keys)
because ``acks_late`` means a chunk can arrive twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from ..errors import PayloadError, PermanentError, backoff, is_retryable
from . import parking

if TYPE_CHECKING:
    from .app import TTQuantCelery

log = logging.getLogger(__name__)

# ``recovering``: True once a write of this process failed on the database (retried or parked).
# The process's next successful write asks for one ``ttquant.flush``: chunks parked during the
# outage come back as soon as the database does, not at the next beat run (TTQUANT_FLUSH_INTERVAL).
_outage = {"recovering": False}


def _after_outage(task: Task) -> None:
    """First success after a failure: send one flush (maintenance queue); never fails the write."""
    _outage["recovering"] = False
    try:
        task.app.send_task("ttquant.flush")
        log.info("%s: the database answers again; flush of parked chunks requested", task.name)
    except Exception as exc:  # noqa: BLE001 - beat's periodic flush still comes
        log.warning("%s: could not request a flush after the outage: %s", task.name, exc)


def _engine(task: Task) -> Any:
    from ..storage.engine import get_engine

    return get_engine(task.app.settings.db_uri)


def _guard_redelivery(task: Task, payload: Any, chunk_id: str | None) -> bool:
    """Count redeliveries of a chunk; True (and the chunk parked) once over the limit.

    Only a redelivered message (worker lost mid-task, connection lost before ack) is counted, so
    the normal path costs nothing.  A chunk that keeps killing its worker stops looping here.
    """
    info = task.request.delivery_info or {}
    if not info.get("redelivered") or not chunk_id:
        return False
    from ..storage.deliveries import bump_delivery

    count = bump_delivery(_engine(task), chunk_id)
    limit = task.app.settings.max_deliveries
    if count > limit:
        log.error("chunk %s delivered %d times (limit %d): parking it", chunk_id, count, limit)
        _settle(task, "park", lambda: parking.park(task.app, task.name, payload, reason=f"redelivered {count} times"))
        return True
    return False


def run_write(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], write: Callable[[Any, Any], int]) -> int:
    """Shared body of the write tasks: ``write(engine, payload) -> rows new``.

    Transient errors are retried by Celery's own machinery (``task.retry``) with exponential
    backoff and jitter; when the budget (``TTQUANT_WRITE_RETRIES``) is spent the payload is parked.
    Permanent errors go to ``dead_letters`` with the reason and are never retried.
    """
    settings = task.app.settings
    payload: Any = {"args": list(args), "kwargs": kwargs}  # what is dead-lettered if the shape is wrong
    chunk_id = None
    try:
        payload = single_payload(task, args, kwargs)
        chunk_id = payload.get("chunk_id") if isinstance(payload, dict) else None
        if _guard_redelivery(task, payload, chunk_id):
            return 0
        rows = write(_engine(task), payload)
        if _outage["recovering"]:
            _after_outage(task)
        return rows
    except Reject:
        raise
    except PermanentError as exc:
        log.error("%s: permanent error, dead-lettered: %s", task.name, exc)
        why = str(exc)
        _settle(task, "dead-letter", lambda: parking.dead_letter(task.app, task.name, payload, why))
        return 0
    except Exception as exc:
        # A write slower than the soft time limit (a database restarting, lock waits) is an outage,
        # not a bad payload: retry it like one.
        if not (is_retryable(exc) or isinstance(exc, SoftTimeLimitExceeded)):
            # A bug, not an outage: keep the payload (dead letter with the reason) rather than
            # losing it with the ack, and never retry it forever.
            log.exception("%s: unexpected error, dead-lettered", task.name)
            reason = f"unexpected {type(exc).__name__}: {exc}"
            _settle(task, "dead-letter", lambda: parking.dead_letter(task.app, task.name, payload, reason))
            return 0
        _outage["recovering"] = True
        retries = task.request.retries
        if retries >= settings.write_retries:
            log.warning("%s: %s after %d retries; parking chunk %s", task.name, exc, retries, chunk_id)
            why = str(exc)
            _settle(task, "park", lambda: parking.park(task.app, task.name, payload, reason=why))
            return 0
        delay = backoff(retries, cap=settings.retry_backoff_max)
        log.info("%s: %s; retry %d in %.2fs", task.name, exc, retries + 1, delay)
        try:
            retry = task.retry(exc=exc, countdown=delay, max_retries=settings.write_retries, throw=False)
        except Reject as rejected:
            # Celery rejects WITHOUT requeue when it cannot publish the retry (broker away too):
            # that would drop the chunk.  Hand it back to the broker instead.
            _requeue(task, "publish the retry", rejected.reason)
        # ``from None``: Celery formats the traceback of every retry it handles, and the chain below
        # it (driver, pool, SQLAlchemy) is deep; the reason is in the log line above and in ``retry.exc``.
        raise retry from None


def _requeue(task: Task, what: str, why: object) -> NoReturn:
    """Hand the message back to the broker (reject + requeue) instead of letting it be acked away.

    Used when neither a retry, a park nor a dead letter could be recorded (broker and/or database
    away).  If even the requeue cannot reach the broker, the message stays unacked and the broker
    delivers it again (Redis after the visibility timeout, RabbitMQ when the connection drops).
    Requeues count as redeliveries, so ``TTQUANT_MAX_DELIVERIES`` still bounds a loop.
    """
    log.warning("%s: could not %s (%s); message requeued", task.name, what, why)
    raise Reject(f"could not {what}: {why}", requeue=True)


def _settle(task: Task, what: str, record: Callable[[], None]) -> None:
    """Run ``record`` (park or dead-letter); requeue the message if it fails."""
    try:
        record()
    except Exception as exc:
        _requeue(task, what, exc)


def single_payload(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The one positional payload of a write task.

    A message of another shape raises :class:`PayloadError` inside :func:`run_write`, so it is
    dead-lettered with the reason instead of failing the call before our code runs (which would
    ack and drop it without a trace).
    """
    if len(args) == 1 and not kwargs:
        return args[0]
    raise PayloadError(f"{task.name} takes exactly one payload argument, got {len(args)} args"
                       f" and keyword arguments {sorted(kwargs)}")


def write_ticks_payload(engine: Any, payload: Any) -> int:
    """Validate a columnar chunk and insert it; returns rows that were new."""
    from ..storage.writers import insert_payload

    return insert_payload(engine, payload)


def register(app: TTQuantCelery) -> None:
    """Register the write tasks on ``app`` (explicit names, acks late, JSON only)."""

    @app.task(name="ttquant.write_ticks", bind=True, acks_late=True, reject_on_worker_lost=True,
              ignore_result=True, max_retries=None)
    def write_ticks(self: Task, *args: Any, **kwargs: Any) -> int:
        """Persist one chunk of ticks (columnar payload, see :mod:`ttquant_tasks.models`)."""
        return run_write(self, args, kwargs, write_ticks_payload)
