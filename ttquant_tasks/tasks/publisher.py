"""Fail-fast publishing of chunks, for the feed's enqueuer thread.

Celery's ``apply_async`` can block its caller for a long time when the broker is down or hung:
kombu retries the first connect without limit and ``retry=False`` does not cover it (celery#4296,
#6911, kombu#902).  :class:`ChunkPublisher` owns one broker connection, (re)connects it with one
bounded attempt, publishes without retries, and turns every failure into
:class:`~ttquant_tasks.errors.BrokerUnavailable` within about ``timeout`` seconds; the enqueuer
then spools the chunk.  It is only ever called from the enqueuer thread, never the receive path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kombu import Connection

from ..errors import BrokerUnavailable
from ..models import payload_len

if TYPE_CHECKING:
    from .app import TTQuantCelery

log = logging.getLogger(__name__)


def describe(payload: Any) -> str:
    """A short text for a message's ``argsrepr`` header (what Flower and worker logs show).

    Given, it spares Celery a ``saferepr`` of the whole payload on every publish: about a third
    of ``send_task``'s CPU for a gateway record.
    """
    if not isinstance(payload, dict):
        return f"[<{type(payload).__name__}>]"
    ticks = payload_len(payload)
    if ticks:
        return f"[<{ticks} ticks {payload.get('chunk_id')}>]"
    records = payload.get("records")
    if isinstance(records, list):
        return f"[<{len(records)} records {payload.get('chunk_id')}>]"
    return f"[<{payload.get('kind')} {payload.get('chunk_id')}>]"


class ChunkPublisher:
    """``publisher(payload)`` sends one ``ttquant.write_ticks`` message or raises BrokerUnavailable."""

    def __init__(self, app: TTQuantCelery, timeout: float, task_name: str = "ttquant.write_ticks") -> None:
        self.app = app
        self.timeout = timeout
        self.task_name = task_name
        self._conn: Connection | None = None
        self._producer: Any = None

    def _connect(self) -> Any:
        if self._producer is not None:
            return self._producer
        options = dict(self.app.conf.broker_transport_options or {})
        # One short attempt; socket timeouts so a hung broker (TCP open, no answer) fails too.
        options.update(socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                       max_retries=0, interval_start=0)
        conn = Connection(self.app.conf.broker_write_url, connect_timeout=self.timeout,
                          transport_options=options, heartbeat=0)
        if conn.transport.driver_type == "amqp":
            # py-amqp reads/writes without a timeout unless told: a hung RabbitMQ would block us.
            conn = Connection(self.app.conf.broker_write_url, connect_timeout=self.timeout,
                              transport_options=options, heartbeat=0,
                              read_timeout=self.timeout, write_timeout=self.timeout)
        try:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=self.timeout)
            self._producer = self.app.amqp.Producer(conn.default_channel, auto_declare=True)
        except Exception:
            conn.release()
            raise
        self._conn = conn
        return self._producer

    def __call__(self, payload: dict[str, Any]) -> None:
        try:
            producer = self._connect()
            self.app.send_task(self.task_name, args=[payload], producer=producer, retry=False,
                               argsrepr=describe(payload), kwargsrepr="{}")
        except Exception as exc:
            self.close()
            raise BrokerUnavailable(f"publish failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        conn, self._conn, self._producer = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # closing a dead connection may raise anything
                log.debug("release of broker connection failed", exc_info=True)
