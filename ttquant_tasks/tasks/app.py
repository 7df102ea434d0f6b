"""The Celery app: configuration, queues and routes.

``celery -A ttquant_tasks worker`` / ``beat`` find :data:`ttquant_tasks.app`.  Its settings come
from the environment when the configuration is first needed (not at import), so importing the
package never starts a service; with no ``CELERY_BROKER_URL`` the embedded Redis under
``TTQUANT_HOME`` is found (or started).

Queues: ``ticks`` (market-data chunks), ``orders`` (orders, trades, positions), ``maintenance``
(flush and periodic jobs).  ``parked`` is where chunks wait after their retry budget is spent:
it is deliberately *not* in ``task_queues``, so no worker, not even one started without ``-Q``,
consumes it; :func:`ttquant_tasks.tasks.parking.flush` moves its messages back.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu import Exchange, Queue

from ..settings import Settings

TICKS, ORDERS, MAINTENANCE, PARKED = "ticks", "orders", "maintenance", "parked"
WORK_QUEUES = (TICKS, ORDERS, MAINTENANCE)


def queue(name: str) -> Queue:
    """The kombu Queue for ``name`` (direct exchange of the same name, durable)."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name, durable=True)


TASK_ROUTES = {
    "ttquant.write_ticks": {"queue": TICKS},
    "ttquant.write_order": {"queue": ORDERS},
    "ttquant.write_trade": {"queue": ORDERS},
    "ttquant.write_position": {"queue": ORDERS},
    "ttquant.write_records": {"queue": ORDERS},
    "ttquant.flush": {"queue": MAINTENANCE},
    "ttquant.partitions": {"queue": MAINTENANCE},
    "ttquant.retention": {"queue": MAINTENANCE},
    "ttquant.mark_to_market": {"queue": MAINTENANCE},
    "ttquant.klines": {"queue": MAINTENANCE},
    "ttquant.metrics": {"queue": MAINTENANCE},
    "ttquant.backup": {"queue": MAINTENANCE},
}

# beat job -> (task, Settings field holding its interval in seconds)
BEAT_JOBS = {
    "flush": ("ttquant.flush", "flush_interval"),
    "partitions": ("ttquant.partitions", "partitions_interval"),
    "retention": ("ttquant.retention", "retention_interval"),
    "mark_to_market": ("ttquant.mark_to_market", "mark_interval"),
    "klines": ("ttquant.klines", "klines_interval"),
    "metrics": ("ttquant.metrics", "metrics_interval"),
    "backup": ("ttquant.backup", "backup_interval"),
}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The ``beat_schedule`` for ``settings``: every job every ``<job>_interval`` seconds.

    Each run expires after one interval: when no worker took it in time (workers down), the next
    run replaces it instead of a backlog of identical jobs piling up in ``maintenance``.
    """
    schedule: dict[str, dict[str, Any]] = {}
    for job, (task, field) in BEAT_JOBS.items():
        every = float(getattr(settings, field))
        schedule[job] = {"task": task, "schedule": every, "options": {"queue": MAINTENANCE, "expires": every}}
    return schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery configuration for ``settings`` (broker already resolved).  See docs/PITFALLS."""
    transport_options: dict[str, Any] = {
        # Redis: redelivery of unacked messages; far above task_time_limit (Settings checks 2x).
        "visibility_timeout": settings.visibility_timeout,
        # Sweep for unacked messages past the timeout every 10 s (kombu's default is ~100 s), so a
        # chunk of a SIGKILLed worker host comes back soon after the visibility timeout.
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        # kombu's Redis transport has no socket timeouts by default: a hung Redis would hang us.
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 25,
        # Bound the connection retries of *publishers* (workers retry forever, below).
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 1,
    }
    return {
        "broker_url": settings.broker_url,
        # Celery's ``conf.broker_url`` returns the CELERY_BROKER_URL environment variable when it is
        # set, whatever the app was configured with; connections use these two instead, so an app
        # made for another broker (the bench's private db, a test's) never talks to the env's one.
        "broker_read_url": settings.broker_url,
        "broker_write_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_timeout": 5,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_heartbeat": 30,
        "broker_pool_limit": 4,
        # JSON only, in and out: a pickle body is refused, never executed.
        "accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit,
        # The soft limit raises inside the task (treated as transient: retried, then parked) a
        # little before the hard limit kills the process.
        "task_soft_time_limit": max(1, settings.task_time_limit - min(10, max(1, settings.task_time_limit // 5))),
        "task_queues": [queue(q) for q in WORK_QUEUES],
        "task_default_queue": TICKS,
        "task_routes": TASK_ROUTES,
        "task_create_missing_queues": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0, "interval_step": 0.5,
                                      "interval_max": 1},
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": beat_schedule(settings),
    }


class TTQuantCelery(Celery):
    """A Celery app that carries its :class:`Settings` (``app.settings``), resolved lazily."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__("ttquant_tasks", **kwargs)
        self._ttq_settings = settings
        self._ttq_lock = threading.Lock()
        self._ttq_db_embedded = False
        self.add_defaults(lambda: celery_config(self.settings))

    @property
    def settings(self) -> Settings:
        """Settings with the broker and database resolved (embedded services found or started)."""
        with self._ttq_lock:
            if self._ttq_settings is None or self._ttq_settings.broker_url is None or (
                self._ttq_settings.db_uri is None
            ):
                from ..services import resolve

                base = self._ttq_settings or Settings.from_env()
                self._ttq_db_embedded = base.db_uri is None
                self._ttq_settings = resolve(base, start=True)
            return self._ttq_settings

    @property
    def db_embedded(self) -> bool:
        """True when the database is the embedded PostgreSQL (no ``DB_URI``): its own binaries dump it."""
        _ = self.settings
        return self._ttq_db_embedded


def make_app(settings: Settings | None = None) -> TTQuantCelery:
    """A configured app with all ttquant tasks registered.  ``None``: settings from the environment."""
    from . import maintenance, orders, transport, writes

    transport.install()  # redis://: a worker that rides out a broker restart (tasks/transport.py)
    app = TTQuantCelery(settings)

    def warm_up(**_: Any) -> None:
        # Open the pool child's database connection now, not in its first task: an order written
        # right after a worker start would otherwise wait for imports and a connect (~0.4 s).
        try:
            from ..storage.engine import get_engine

            engine = get_engine(app.settings.db_uri)
            with engine.connect():
                pass
            if ORDERS in app.amqp.queues.consume_from:
                # The order writers keep their own autocommit connection (storage/orders.py).
                from ..storage.orders import open_connection

                open_connection(engine)
        except Exception as exc:  # the database may be down: the first task retries as usual
            logging.getLogger(__name__).info("worker warm-up: database not reachable yet (%s)", exc)

    worker_process_init.connect(warm_up, weak=False, dispatch_uid="ttquant-worker-warm-up")
    writes.register(app)
    orders.register(app)
    maintenance.register(app)
    return app
