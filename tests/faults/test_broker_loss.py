"""The broker loses queued chunks: a Redis without persistence restarts while chunks wait in it.

Redis as a Celery broker is often run without persistence (this machine's own Redis is); a restart
then drops every queued message, and no Celery or kombu setting brings them back.  The feed's
end-to-end confirmation (feed/confirm.py) resends what never reached the database.  The control
run (``TTQUANT_RESEND_AFTER=0``) shows the fault really loses ticks, so the other run's count of
"every tick stored once" means something.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.checks import assert_all_once, feed_counts, feed_process, stored_ids, unique_exchange
from tests.support.services import free_port
from tests.support.waiting import wait_for
from ttquant_tasks.services.redis import redis_server_path

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]

SYMBOLS = ("BTCUSDT", "ETHUSDT")


class VolatileRedis:
    """A private redis-server with no persistence at all (no RDB, no AOF), on a fixed port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([str(redis_server_path()), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._pings, timeout=30, what="redis-server up")

    def _pings(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[VolatileRedis]:
    r = VolatileRedis(tmp_path / "redis")
    r.start()
    yield r
    r.kill()


@pytest.mark.parametrize("resend_after", ["0", "4"], ids=["control-no-confirmation", "confirmation"])
def test_redis_restart_with_chunks_queued(resend_after: str, volatile_redis: VolatileRedis, schema_db: str,
                                          stack_env: Callable[..., dict[str, str]],
                                          start_worker: Callable[..., Any]) -> None:
    exchange = unique_exchange("bl")
    env = stack_env(schema_db, volatile_redis.url, TTQUANT_SYMBOLS=",".join(SYMBOLS), TTQUANT_CHUNK_SIZE="250",
                    ZMQ_PUB_ENDPOINT=f"tcp://127.0.0.1:{free_port()}", TTQUANT_PUBLISH_TIMEOUT="0.5",
                    TTQUANT_RESEND_AFTER=resend_after)
    feed = feed_process(env, exchange, rate=500, duration=20)
    try:
        # No worker yet: chunks wait in Redis.  Then Redis dies and comes back empty.
        wait_for(lambda: volatile_redis.client().llen("ticks") >= 4, timeout=60, what="4 chunks queued")
        volatile_redis.kill()
        volatile_redis.start()
        start_worker(env)
        out, _ = feed.communicate(timeout=120)
    finally:
        if feed.poll() is None:
            feed.kill()
            feed.wait()
    assert feed.returncode == 0, out[-3000:]
    counts = feed_counts(env)
    published = counts["ticks"]
    if resend_after == "0":
        assert "confirm" not in counts
        # Whatever was queued before the restart is gone for good: wait for the rest, then count.
        wait_for(lambda: volatile_redis.client().llen("ticks") == 0, timeout=60, what="queue drained")
        wait_for(lambda: sum(len(stored_ids(schema_db, exchange, s)) for s in SYMBOLS) >= published - 1000,
                 timeout=60, what="the chunks published after the restart")
        stored = sum(len(stored_ids(schema_db, exchange, s)) for s in SYMBOLS)
        assert stored <= published - 1000, f"the restart lost nothing ({stored} of {published}): not a fault"
        return
    assert counts["confirm"]["resent"] >= 4, counts["confirm"]
    assert counts["confirm"]["given_up"] == 0
    assert_all_once(schema_db, exchange, SYMBOLS, published)
