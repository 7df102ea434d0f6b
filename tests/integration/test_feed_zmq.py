"""The feed process end to end on loopback: sim ticks -> a real ZeroMQ SUB + chunks -> publish stub.

The publish stub stands in for the broker (the Celery side is tested elsewhere); it records chunks
or raises BrokerUnavailable, to check the feed's own guarantees: every tick on ZMQ, every tick in
exactly one chunk, chunks in order, the spool holding what the broker refused and replaying it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from ttquant_tasks.bus.codec import decode_market_data
from ttquant_tasks.bus.zmq import MarketDataPublisher
from ttquant_tasks.errors import BrokerUnavailable
from ttquant_tasks.feed.runner import _Feed, run_feed
from ttquant_tasks.feed.sim import SimSource
from ttquant_tasks.feed.spool import Spool
from ttquant_tasks.feed.stats import read_stats
from ttquant_tasks.models import Tick, payload_rows
from ttquant_tasks.settings import Settings

pytestmark = pytest.mark.integration

WAIT = 60.0  # s: bound for conditions that normally hold within a second (no timing is asserted)
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Broker:
    """Publish stub: records chunk payloads, or raises BrokerUnavailable while ``down``."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.chunks: list[dict[str, Any]] = []

    def __call__(self, payload: dict[str, Any]) -> None:
        if self.down:
            raise BrokerUnavailable("connection refused (stub)")
        self.chunks.append(json.loads(json.dumps(payload)))  # as it would cross the broker

    def ticks(self) -> list[Tick]:
        return [t for c in list(self.chunks) for t in payload_rows(c)]


class Bus:
    """A PUB (the feed's) and a connected SUB, past ZeroMQ's slow-joiner window."""

    def __init__(self) -> None:
        self.pub = MarketDataPublisher("tcp://127.0.0.1:*")
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 0)  # keep everything: the test reads after the run
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(self.pub.bound_endpoint)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"md.")
        self.sub.setsockopt(zmq.SUBSCRIBE, b"probe")
        # A subscription reaches the PUB asynchronously: probe until one arrives.
        deadline = time.monotonic() + WAIT
        while True:
            self.pub.send_frames(b"probe", b"")
            if self.sub.poll(50):
                break
            assert time.monotonic() < deadline, "SUB never received the probe"
        self.pub.sent = 0

    def receive(self, n: int) -> list[tuple[bytes, Tick]]:
        out: list[tuple[bytes, Tick]] = []
        deadline = time.monotonic() + WAIT
        while len(out) < n:
            assert self.sub.poll(100) or time.monotonic() < deadline, f"only {len(out)} of {n} ticks on ZMQ"
            if not self.sub.poll(0):
                continue
            topic, body = self.sub.recv_multipart()
            if topic == b"probe":
                continue
            m = decode_market_data(body)
            out.append((topic, Tick(m.exchange, m.symbol, m.trade_id, m.price_str, m.volume_str,
                                    m.exchange_time, m.local_time)))
        assert not self.sub.poll(200) or self.sub.recv_multipart()[0] == b"probe", "more ticks than sent"
        return out

    def close(self) -> None:
        self.pub.close()
        self.sub.close()
        self.ctx.term()


@pytest.fixture
def bus() -> Iterator[Bus]:
    b = Bus()
    yield b
    b.close()


def make_settings(home: Path, **kw: Any) -> Settings:
    return Settings(home=home, zmq_pub_endpoint="tcp://127.0.0.1:*", chunk_size=kw.pop("chunk_size", 50),
                    chunk_age=kw.pop("chunk_age", 0.2), **kw)


def run_in_thread(**kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def target() -> None:
        result.update(run_feed(**kwargs))

    t = threading.Thread(target=target, name="test-feed")
    t.start()
    return t, result


def assert_consecutive(ticks: list[Tick], start_ids: dict[str, int]) -> None:
    """Each symbol's ids, in the given order, are start+1, start+2, ... with no gap or repeat."""
    for sym in SYMBOLS:
        ids = [t.trade_id for t in ticks if t.symbol == sym]
        first = start_ids.get(sym, 0) + 1
        assert ids == list(range(first, first + len(ids))), f"{sym} ids not consecutive"


def spool_ticks(directory: Path) -> list[Tick]:
    """Ticks of the chunks on disk, in spool order (read straight from the files)."""
    files = sorted(p for p in directory.glob("*.json"))
    return [t for f in files for t in payload_rows(json.loads(f.read_text()))]


def test_every_tick_on_zmq_and_in_exactly_one_chunk_in_order(tmp_path: Path, bus: Bus) -> None:
    start_ids = {"BTCUSDT": 1000}
    n = 1234
    source = itertools.islice(SimSource(SYMBOLS, "max", seed=1, start_ids=start_ids), n)
    broker = Broker()
    stats_path = tmp_path / "run" / "feed.json"
    t, result = run_in_thread(settings=make_settings(tmp_path), source=source, publish=broker,
                              publisher=bus.pub, stats_path=stats_path)
    t.join(WAIT)
    assert not t.is_alive()

    received = bus.receive(n)
    assert all(topic == f"md.{tick.symbol}.sim".encode() for topic, tick in received)
    assert_consecutive([tick for _, tick in received], start_ids)

    ticks = broker.ticks()
    assert len(ticks) == n
    assert_consecutive(ticks, start_ids)  # each id once, and chunks arrived in order
    # same prices, quantities and times on both paths (buyer_maker is not in MarketData)
    assert {tick for _, tick in received} == {dataclasses.replace(t, buyer_maker=None) for t in ticks}
    assert all(len(c["symbol"]) <= 50 for c in broker.chunks)
    assert (result["ticks"], result["zmq_sent"], result["zmq_dropped"]) == (n, n, 0)
    assert (result["published"], result["spooled"], result["lost"]) == (len(broker.chunks), 0, 0)
    newest = {s: max(t.trade_id for t in ticks if t.symbol == s) for s in SYMBOLS}
    assert result["last_ids"] == newest  # what a restart continues after
    saved = read_stats(stats_path)
    assert saved is not None and saved["counts"]["published"] == len(broker.chunks)


def test_an_aged_chunk_goes_out_while_the_source_is_silent(tmp_path: Path, bus: Bus) -> None:
    release = threading.Event()

    def stalling() -> Iterator[Tick]:
        yield from itertools.islice(SimSource(SYMBOLS, "max", seed=2), 5)
        release.wait(4 * WAIT)  # like a websocket with no trades; longer than wait_for below

    broker = Broker()
    t, result = run_in_thread(settings=make_settings(tmp_path, chunk_size=100, chunk_age=0.2),
                              source=stalling(), publish=broker, publisher=bus.pub)
    try:
        wait_for(lambda: len(broker.chunks) == 1, "the age-expired chunk")
        assert len(broker.chunks[0]["symbol"]) == 5
    finally:
        release.set()
        t.join(WAIT)
    assert result["ticks"] == 5 and len(broker.ticks()) == 5


def test_broker_down_zmq_still_gets_everything_spool_holds_every_chunk_then_replays(
        tmp_path: Path, bus: Bus) -> None:
    n1, n2 = 700, 300
    sim = SimSource(SYMBOLS, "max", seed=3)
    broker = Broker(down=True)
    settings = make_settings(tmp_path)
    back = threading.Event()
    finish = threading.Event()

    def source() -> Iterator[Tick]:
        yield from itertools.islice(sim, n1)
        back.wait(WAIT)
        yield from itertools.islice(sim, n2)
        finish.wait(WAIT)

    t, result = run_in_thread(settings=settings, source=source(), publish=broker, publisher=bus.pub,
                              retry_interval=0.05)
    try:
        received = bus.receive(n1)  # ZMQ does not care about the broker
        assert_consecutive([tick for _, tick in received], {})
        wait_for(lambda: Spool(settings.spool_dir).pending_ticks() == n1, "every chunk spooled")
        on_disk = spool_ticks(settings.spool_dir)
        assert len(on_disk) == n1
        assert_consecutive(on_disk, {})
        assert broker.chunks == []

        broker.down = False  # the broker is back
        back.set()
        wait_for(lambda: len(broker.ticks()) == n1 + n2, "replay and new chunks")
    finally:
        back.set()
        finish.set()
        t.join(WAIT)
    ticks = broker.ticks()
    assert len(ticks) == n1 + n2
    assert_consecutive(ticks, {})  # replayed chunks first, then the new ones, no repeats
    assert len(Spool(settings.spool_dir)) == 0
    assert not list(settings.spool_dir.glob("*.json"))
    assert result["lost"] == 0 and result["replayed"] == result["spooled"] > 0
    assert len(bus.receive(n2)) == n2


def test_spool_left_by_a_run_without_broker_is_replayed_by_the_next_run(tmp_path: Path, bus: Bus) -> None:
    n = 500
    settings = make_settings(tmp_path)
    down = Broker(down=True)
    first = run_feed(settings, itertools.islice(SimSource(SYMBOLS, "max", seed=4), n), publish=down,
                     publisher=bus.pub)
    assert len(bus.receive(n)) == n
    assert first["lost"] == 0 and first["published"] == 0
    assert first["spooled"] == first["chunks"] > 0
    spooled = spool_ticks(settings.spool_dir)
    assert len(spooled) == n
    assert_consecutive(spooled, {})

    up = Broker()

    def idle_until_replayed() -> Iterator[Tick]:
        wait_for(lambda: len(up.ticks()) == n, "replay on restart")
        yield from ()

    second = run_feed(settings, idle_until_replayed(), publish=up, publisher=bus.pub)
    assert up.ticks() == spooled
    assert second["replayed"] == first["chunks"]
    assert len(Spool(settings.spool_dir)) == 0


def test_sigterm_stops_cleanly_and_flushes(tmp_path: Path, bus: Bus) -> None:
    broker = Broker()
    before = signal.getsignal(signal.SIGTERM)
    killer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    killer.start()
    try:
        result = run_feed(make_settings(tmp_path, chunk_age=60.0), SimSource(SYMBOLS, 500, seed=5),
                          publish=broker, publisher=bus.pub)  # endless source: only the signal ends it
    finally:
        killer.cancel()
    assert signal.getsignal(signal.SIGTERM) is before
    ticks = broker.ticks()
    assert result["ticks"] == len(ticks) > 0  # the partial chunk was flushed, not dropped
    assert_consecutive(ticks, {})
    assert len(bus.receive(len(ticks))) == len(ticks)


def test_counters_include_the_chunk_not_released_yet(tmp_path: Path, bus: Bus) -> None:
    class Held:
        """Enqueuer stand-in for this unit of the loop: keeps what it is handed."""

        def __init__(self) -> None:
            self.payloads: list[dict[str, Any]] = []

        def submit(self, payload: dict[str, Any]) -> None:
            self.payloads.append(payload)

        def stats(self) -> dict[str, Any]:
            return {}

    held = Held()
    feed = _Feed(make_settings(tmp_path, chunk_size=3), bus.pub, held)  # type: ignore[arg-type]
    ticks = list(itertools.islice(SimSource(SYMBOLS, "max", seed=3), 7))
    for tick in ticks:
        feed.on_tick(tick, 0.0)
    assert [len(p["symbol"]) for p in held.payloads] == [3, 3]  # the 7th tick is still pending
    counts = feed.counts()
    assert (counts["ticks"], counts["chunks"], counts["pending"]) == (7, 2, 1)
    assert counts["last_ids"] == {s: max(t.trade_id for t in ticks if t.symbol == s) for s in {t.symbol for t in ticks}}
