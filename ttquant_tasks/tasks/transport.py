"""kombu's Redis transport, with a worker that rides out a broker restart.

When the broker connection drops, Celery closes the channel and kombu hands the messages the worker
had reserved but not acked (prefetched chunks, chunks waiting for a retry) back to Redis.  With
Redis down that hand-back cannot connect, and in kombu 5.x it then fails with an AttributeError
(the connection it would use is already released) that escapes ``ignore_errors``: Celery reports an
"Unrecoverable error" and the worker exits (tests/faults/test_worker_restart_retrying.py).  Under
honcho a worker that exits takes the feed and the gateway down with it (PITFALLS.md).

The messages are not lost when the hand-back fails: they are still in Redis's unacked hash, and
Redis would deliver them again after the visibility timeout (``TTQUANT_VISIBILITY_TIMEOUT``, 1 h
by default).  So :class:`QoS` logs a failed hand-back, remembers the delivery tags, and the next
channel this process opens (the reconnect, once Redis answers again) hands them back at once.
Handing back a tag another worker already restored is a no-op (kombu's restore is a WATCHed
transaction on the unacked hash), and a chunk delivered twice is written once.
:func:`install` makes ``redis://`` and ``rediss://`` URLs use this transport (in the processes that
import the app: workers, beat, feed, gateway); nothing else of kombu's behaviour changes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kombu import transport as kombu_transport
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


_pending: set[str] = set()  # delivery tags whose hand-back failed, in this process
_pending_lock = threading.Lock()


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> Any:
        try:
            return super().restore_unacked(client)
        except Exception as exc:  # noqa: BLE001 - see the module doc: the messages are not lost
            tags = list(self._delivered)
            with _pending_lock:
                _pending.update(tags)
            self._delivered.clear()
            log.warning("could not hand %d reserved messages back to Redis now (%s: %s); they go back "
                        "when the broker answers again", len(tags), type(exc).__name__, exc)
            return None


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # raises while Redis is down: kombu retries the connect
        if _pending:
            self._restore_pending()

    def _restore_pending(self) -> None:
        with _pending_lock:
            tags = sorted(_pending)
            _pending.clear()
        failed = []
        for tag in tags:
            try:
                self.qos.restore_by_tag(tag)  # as kombu restores: next in line
            except Exception:  # noqa: BLE001 - the connection went again: keep it for the next channel
                failed.append(tag)
        if failed:
            with _pending_lock:
                _pending.update(failed)
        log.warning("handed %d reserved messages back to Redis after reconnecting", len(tags) - len(failed))


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Use :class:`Transport` for ``redis://`` and ``rediss://`` broker URLs (idempotent)."""
    for scheme in ("redis", "rediss"):
        kombu_transport.TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
