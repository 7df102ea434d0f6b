"""An app talks to the broker it was made for, even when CELERY_BROKER_URL names another one.

Celery's ``conf.broker_url`` prefers that environment variable over the app's configuration; the
bench (a private Redis db per run) and every tool that builds an app for a given broker rely on
this not mattering.  Found when the bench's probes and its parked-queue flush went to the user's
db 0 instead of the run's own.
"""

from __future__ import annotations

import pytest
import redis

from tests.support.services import free_port
from ttquant_tasks.settings import Settings
from ttquant_tasks.tasks.app import ORDERS, make_app
from ttquant_tasks.tasks.parking import queue_depths
from ttquant_tasks.tasks.publisher import ChunkPublisher

pytestmark = pytest.mark.integration


def test_publishing_and_queue_depths_use_the_apps_broker_not_the_env(redis_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    app = make_app(Settings(broker_url=redis_url, db_uri="postgresql://nobody@127.0.0.1:1/none"))
    client = redis.Redis.from_url(redis_url)
    try:
        app.send_task("ttquant.write_order", args=[{"kind": "order"}], queue=ORDERS, retry=False)
        publisher = ChunkPublisher(app, timeout=2.0, task_name="ttquant.write_trade")
        publisher({"kind": "trade", "chunk_id": "trade:t1"})
        publisher.close()
        assert client.llen(ORDERS) == 2
        assert queue_depths(app, (ORDERS,)) == {ORDERS: 2}
    finally:
        client.delete(ORDERS)
        client.close()
