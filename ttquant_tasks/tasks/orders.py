"""The gateway's write tasks (``orders`` queue) and the publisher that routes records to them.

``ttquant.write_order`` / ``write_trade`` / ``write_position`` each take one record payload, and
``ttquant.write_records`` one ``group`` payload (an order's records, written in one transaction;
see :mod:`ttquant_tasks.gateway.records`); each calls the idempotent writer of
:mod:`ttquant_tasks.storage.orders` through :func:`.writes.run_write` (retry, park, dead letter).
:class:`RecordPublisher` is the gateway enqueuer's ``publish``: it sends a record as a message of
the task its ``kind`` names, failing fast (:class:`~.publisher.ChunkPublisher`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Task

from ..errors import PayloadError
from .publisher import ChunkPublisher
from .writes import run_write

if TYPE_CHECKING:
    from .app import TTQuantCelery

TASK_FOR_KIND = {
    "order": "ttquant.write_order",
    "trade": "ttquant.write_trade",
    "position": "ttquant.write_position",
    "group": "ttquant.write_records",
}


class RecordPublisher:
    """``publisher(record)`` sends one record (or group) to its task or raises ``BrokerUnavailable``.

    One broker connection per task name, each opened lazily.  Called from the
    gateway's enqueuer thread only.  A record without a known ``kind`` raises ``PayloadError`` (a
    bug in the gateway; the enqueuer keeps it in the spool rather than losing it).
    """

    def __init__(self, app: TTQuantCelery, timeout: float) -> None:
        self._by_kind = {kind: ChunkPublisher(app, timeout, task_name=name) for kind, name in TASK_FOR_KIND.items()}

    def __call__(self, record: dict[str, Any]) -> None:
        publisher = self._by_kind.get(record.get("kind", ""))
        if publisher is None:
            raise PayloadError(f"record kind {record.get('kind')!r} is not one of {sorted(self._by_kind)}")
        publisher(record)

    def close(self) -> None:
        for publisher in self._by_kind.values():
            publisher.close()


def _write_order(engine: Any, payload: Any) -> int:
    from ..storage.orders import upsert_order

    return upsert_order(engine, payload)


def _write_trade(engine: Any, payload: Any) -> int:
    from ..storage.orders import insert_trade

    return insert_trade(engine, payload)


def _write_position(engine: Any, payload: Any) -> int:
    from ..storage.orders import insert_position

    return insert_position(engine, payload)


def _write_group(engine: Any, payload: Any) -> int:
    from ..storage.orders import write_group

    return write_group(engine, payload)


def register(app: TTQuantCelery) -> None:
    """Register the gateway write tasks on ``app`` (explicit names, acks late, JSON only)."""
    options: dict[str, Any] = dict(bind=True, acks_late=True, reject_on_worker_lost=True,
                                   ignore_result=True, max_retries=None)

    @app.task(name=TASK_FOR_KIND["order"], **options)
    def write_order(self: Task, *args: Any, **kwargs: Any) -> int:
        """Insert an order row or advance its status (idempotent)."""
        return run_write(self, args, kwargs, _write_order)

    @app.task(name=TASK_FOR_KIND["trade"], **options)
    def write_trade(self: Task, *args: Any, **kwargs: Any) -> int:
        """Insert a fill or rejection row once (by trade_id)."""
        return run_write(self, args, kwargs, _write_trade)

    @app.task(name=TASK_FOR_KIND["position"], **options)
    def write_position(self: Task, *args: Any, **kwargs: Any) -> int:
        """Insert a position snapshot once (by strategy, symbol, time)."""
        return run_write(self, args, kwargs, _write_position)

    @app.task(name=TASK_FOR_KIND["group"], **options)
    def write_records(self: Task, *args: Any, **kwargs: Any) -> int:
        """Write an order's records (a group) in one transaction (idempotent)."""
        return run_write(self, args, kwargs, _write_group)
