"""Enqueuer: order kept across outages and overflows, spool replay, nothing blocks the caller.

``publish`` is a plain function here (records or raises): this tests the enqueuer's own logic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ttquant_tasks.errors import BrokerUnavailable
from ttquant_tasks.feed.enqueuer import Enqueuer
from ttquant_tasks.feed.spool import Spool

WAIT = 30.0  # s: generous bound for conditions that normally hold within milliseconds


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def chunk(n: int) -> dict[str, Any]:
    return {"v": 1, "exchange": "sim", "chunk_id": f"c{n}", "symbol": ["BTCUSDT"], "trade_id": [n]}


class Broker:
    """Records published chunk numbers; ``down`` makes publish raise; ``gate`` can hold it."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.down = False
        self.attempts = 0
        self.error: Exception = BrokerUnavailable("connection refused")
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, payload: dict[str, Any]) -> None:
        self.attempts += 1
        self.entered.set()
        self.gate.wait()
        if self.down:
            raise self.error
        self.got.append(payload["trade_id"][0])


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def make(tmp_path: Path, broker: Broker) -> Iterator[Callable[..., Enqueuer]]:
    made: list[Enqueuer] = []

    def factory(queue_max: int = 100, spool: Spool | None = None) -> Enqueuer:
        spool = spool if spool is not None else Spool(tmp_path / "spool")  # an empty Spool is falsy
        e = Enqueuer(broker, spool, queue_max, retry_interval=0.05)
        made.append(e)
        return e

    yield factory
    broker.gate.set()
    for e in made:
        e.close(5)


def test_broker_up_publishes_everything_in_order(make: Callable[..., Enqueuer], broker: Broker) -> None:
    e = make(queue_max=1000)
    for i in range(200):
        e.submit(chunk(i))
    e.close(10)
    assert broker.got == list(range(200))
    s = e.stats()
    assert (s["submitted"], s["published"], s["spooled"], s["replayed"], s["lost"]) == (200, 200, 0, 0, 0)
    assert s["spool_chunks"] == 0 and s["broker_up"] is True


@pytest.mark.parametrize("error", [BrokerUnavailable("refused"), OSError("reset"), RuntimeError("kombu bug")])
def test_outage_spools_then_replays_in_order(make: Callable[..., Enqueuer], broker: Broker,
                                             error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    e = make()
    e.submit(chunk(0))
    wait_for(lambda: broker.got == [0], "first publish")
    broker.error = error
    broker.down = True
    with caplog.at_level(logging.WARNING):
        for i in range(1, 30):
            e.submit(chunk(i))
        wait_for(lambda: len(e.spool) == 29, "all chunks spooled")
        assert e.stats()["broker_up"] is False
        attempts = broker.attempts
        wait_for(lambda: broker.attempts > attempts + 1, "probes every retry_interval")
        assert len(e.spool) == 29  # a failed probe leaves the chunk in the spool
        broker.down = False
        for i in range(30, 40):
            e.submit(chunk(i))
        wait_for(lambda: len(broker.got) == 40, "replay")
    assert broker.got == list(range(40))
    assert len(e.spool) == 0
    s = e.stats()
    assert (s["submitted"], s["published"], s["spooled"], s["replayed"], s["lost"]) == (40, 40, 29, 29, 0)
    assert "broker unavailable" in caplog.text and type(error).__name__ in caplog.text
    assert "broker is back" in caplog.text


def test_full_queue_spills_to_spool_without_blocking_and_order_is_kept(
        make: Callable[..., Enqueuer], broker: Broker) -> None:
    broker.gate.clear()  # a hung broker: publish does not return
    e = make(queue_max=2)
    e.submit(chunk(0))
    assert broker.entered.wait(WAIT)  # chunk 0 is inside publish
    for i in range(1, 6):
        e.submit(chunk(i))  # returns although the publisher is stuck
    s = e.stats()
    assert (s["queued"], s["spooled"], s["spool_chunks"]) == (2, 3, 3)  # 1, 2 queued; 3, 4, 5 spilled
    broker.gate.set()
    wait_for(lambda: len(broker.got) == 6, "all published")
    assert broker.got == [0, 1, 2, 3, 4, 5]  # queued chunks went before the newer spilled ones
    assert len(e.spool) == 0


def test_a_new_enqueuer_replays_the_old_spool_before_new_chunks(
        tmp_path: Path, make: Callable[..., Enqueuer], broker: Broker) -> None:
    old = Spool(tmp_path / "spool")
    for i in range(5):
        old.append(chunk(i))
    e = make()  # same directory, as after a restart
    for i in range(5, 8):
        e.submit(chunk(i))
    wait_for(lambda: len(broker.got) == 8, "replay and publish")
    assert broker.got == list(range(8))
    assert e.stats()["replayed"] == 5


def test_spool_failure_while_broker_down_holds_what_fits_in_memory_and_counts_the_rest_lost(
        tmp_path: Path, make: Callable[..., Enqueuer], broker: Broker,
        caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    broker.down = True
    e = make(queue_max=1, spool=Spool(blocker / "spool"))
    with caplog.at_level(logging.ERROR):
        e.submit(chunk(0))
        wait_for(lambda: broker.attempts >= 1, "the first publish attempt")
        for i in range(1, 20):
            e.submit(chunk(i))  # never raises, never blocks
        s = e.stats()
        # 0 is held by the thread, 1 waits in the queue, 2..19 found both queue and spool full
        assert (s["lost"], s["queued"], s["spooled"]) == (18, 1, 0)
    assert "CHUNK LOST" in caplog.text and "Not a directory" in caplog.text
    assert "holding chunks in memory" in caplog.text
    assert caplog.text.count("CHUNK LOST") < 18  # rate-limited
    broker.down = False
    wait_for(lambda: broker.got == [0, 1], "held chunks published at the next probe")
    e.submit(chunk(99))
    wait_for(lambda: broker.got == [0, 1, 99], "publishing resumes")


def test_close_drains_the_queue_to_the_broker(make: Callable[..., Enqueuer], broker: Broker) -> None:
    broker.gate.clear()
    e = make(queue_max=1000)
    for i in range(50):
        e.submit(chunk(i))
    broker.gate.set()
    e.close(10)
    assert broker.got == list(range(50))
    e.submit(chunk(50))  # after close: not lost, spooled for the next run
    assert len(e.spool) == 1


def test_close_while_broker_down_spools_the_queue(make: Callable[..., Enqueuer], broker: Broker) -> None:
    broker.down = True
    broker.gate.clear()
    e = make(queue_max=1000)
    for i in range(50):
        e.submit(chunk(i))
    broker.gate.set()
    e.close(10)
    assert broker.got == []
    assert len(e.spool) == 50
    s = e.stats()
    assert (s["spooled"], s["lost"], s["published"]) == (50, 0, 0)
    ids = []
    while (item := e.spool.peek_oldest()) is not None:
        ids.append(item[1]["trade_id"][0])
        e.spool.remove(item[0])
    assert ids == list(range(50))


def test_close_with_a_spool_backlog_moves_the_queue_behind_it(
        tmp_path: Path, make: Callable[..., Enqueuer], broker: Broker) -> None:
    broker.gate.clear()  # hold the first publish so the backlog cannot drain before close
    e = make(queue_max=2)
    for i in range(6):
        e.submit(chunk(i))  # 0 in publish, 1-2 queued, 3-5 spilled to the spool
    assert broker.entered.wait(WAIT)
    closer = threading.Thread(target=e.close, args=(10,))
    closer.start()
    broker.gate.set()
    closer.join()
    # the newer queued chunks must not overtake the spooled ones: they join the spool, in order
    rest = Spool(tmp_path / "spool")
    ids = []
    while (item := rest.peek_oldest()) is not None:
        ids.append(item[1]["trade_id"][0])
        rest.remove(item[0])
    assert broker.got + ids == list(range(6))
    assert e.stats()["lost"] == 0


def test_tagged_chunks_are_reported_once_published_or_spooled_and_untagged_never(
        tmp_path: Path, broker: Broker) -> None:
    handed: list[Any] = []
    e = Enqueuer(broker, Spool(tmp_path / "spool"), 2, retry_interval=0.05, on_handover=handed.append)
    try:
        e.submit(chunk(0), tag="t0")
        e.submit(chunk(1))  # no tag (the feed): no callback
        wait_for(lambda: broker.got == [0, 1], "published")
        assert handed == ["t0"]
        broker.gate.clear()  # hung broker: 2 in publish, 3-4 queued, 5-6 spilled to the spool at once
        broker.entered.clear()
        e.submit(chunk(2), tag="t2")
        assert broker.entered.wait(WAIT)
        for i in range(3, 7):
            e.submit(chunk(i), tag=f"t{i}")
        assert sorted(handed) == ["t0", "t5", "t6"]  # the spool took them durably: handed over
        broker.gate.set()
        wait_for(lambda: len(broker.got) == 7, "the rest published")
        wait_for(lambda: sorted(handed) == ["t0", "t2", "t3", "t4", "t5", "t6"], "every tag reported")
        assert broker.got == list(range(7))  # spool replays are not reported a second time
    finally:
        broker.gate.set()
        e.close(5)


def test_a_lost_chunk_is_never_reported_handed_over(tmp_path: Path, broker: Broker) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    broker.down = True
    handed: list[Any] = []
    e = Enqueuer(broker, Spool(blocker / "spool"), 1, retry_interval=0.05, on_handover=handed.append)
    try:
        e.submit(chunk(0), tag=0)
        wait_for(lambda: broker.attempts >= 1, "the first publish attempt")
        for i in range(1, 5):
            e.submit(chunk(i), tag=i)
        assert e.stats()["lost"] == 3 and handed == []
        broker.down = False
        wait_for(lambda: broker.got == [0, 1], "held chunks published")
        wait_for(lambda: handed == [0, 1], "held chunks reported")
    finally:
        e.close(5)


def test_a_failing_handover_callback_does_not_stop_publishing(tmp_path: Path, broker: Broker) -> None:
    def boom(tag: Any) -> None:
        raise RuntimeError("callback bug")

    e = Enqueuer(broker, Spool(tmp_path / "spool"), 10, retry_interval=0.05, on_handover=boom)
    try:
        for i in range(3):
            e.submit(chunk(i), tag=i)
        wait_for(lambda: broker.got == [0, 1, 2], "published despite the callback")
    finally:
        e.close(5)
