"""Child process: the real feed loop (``run_feed``) on a sim source, instrumented, result as JSON.

Usage (by the bench only): ``python -m ttquant_tasks.bench.feedproc '<json config>'`` with the
environment of the run.  Config keys: ``exchange``, ``symbols``, ``rate`` (ticks/s, 0 = max),
``duration`` (s), ``instrument`` (time every tick), ``floor_endpoints`` (two endpoints: bind the
floors' PUB sockets there and interleave them, see below), ``profile`` (path for a cProfile dump).

Instrumentation wraps ``_Feed.on_tick`` -- ZMQ encode + send, chunk append and, when a chunk
fills, building its payload and handing it to the enqueuer -- with ``perf_counter_ns``; nothing
in ``runner.py`` is edited.  The last stdout line is one JSON object.

The sim paces itself by sleeping whenever it is 5 ms ahead of schedule, so ticks come in bursts,
as from a websocket.  The first tick after a sleep runs cold (here, a VM: after the vCPU idled,
Python and libzmq run several times slower) and those ticks set the p99; they are reported apart
(``*_cold_*``, ``*_cold_share``).  With ``floor_endpoints`` the bursts take turns: in one,
``on_tick`` is timed; in the next, a floor is timed and ``on_tick`` then runs untimed (so the load
stays the feed's), and so on over the floors of :func:`_floors`.  The floors are thus measured in
the same process, under the same load and pacing, interleaved every few ms.
"""

from __future__ import annotations

import array
import cProfile
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.backend import Socket as BackendSocket

from ..bus.codec import MarketDataEncoder, encode_market_data, md_topic
from ..feed import runner
from ..feed.sim import SimSource
from ..models import Tick
from ..runtime import make_confirmer
from ..settings import Settings
from ..tasks.app import make_app
from ..tasks.publisher import ChunkPublisher
from .floorproc import pub_socket
from .report import summary

_SKIP = 1000  # first ticks not timed: imports, socket setup and the first broker connect


Floor = Callable[[Tick], None]


class _Samples:
    """Per-tick ns of each timed body (ours, then the floors), split into warm ticks and cold ones
    (the first after a sleep of the source).  The body timed changes at each cold tick, in turn."""

    def __init__(self, floors: dict[str, Floor]) -> None:
        self.names = ["hot_us", *floors]
        self.bodies: list[Floor | None] = [None, *floors.values()]  # None: ours, on_tick itself
        self.warm = [array.array("q") for _ in self.names]
        self.cold = [array.array("q") for _ in self.names]
        self.slept = False  # set by the source's sleep, cleared by the next tick
        self.turn = 0
        self.seen = 0

    def sleep(self, seconds: float) -> None:
        self.slept = True
        time.sleep(seconds)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for prefix, warm, cold in zip(self.names, self.warm, self.cold, strict=True):
            if not warm and not cold:
                continue
            out.update(summary(prefix, warm + cold, scale=1e-3))
            out.update(summary(f"{prefix}_cold", cold, scale=1e-3))
            out[f"{prefix}_cold_share"] = round(len(cold) / (len(warm) + len(cold)), 4)
        return out


def _instrument(samples: _Samples) -> None:
    original = runner._Feed.on_tick
    clock = time.perf_counter_ns
    bodies, turns = samples.bodies, len(samples.bodies)

    def timed(self: runner._Feed, tick: Tick, now: float) -> None:
        cold = samples.slept
        samples.slept = False
        if cold:
            samples.turn = (samples.turn + 1) % turns
        samples.seen += 1
        if samples.seen <= _SKIP:
            original(self, tick, now)
            return
        turn = samples.turn
        floor = bodies[turn]
        if floor is None:
            t0 = clock()
            original(self, tick, now)
            t1 = clock()
        else:
            t0 = clock()
            floor(tick)
            t1 = clock()
            original(self, tick, now)  # untimed: the load stays that of the feed
        (samples.cold if cold else samples.warm)[turn].append(t1 - t0)

    runner._Feed.on_tick = timed  # type: ignore[method-assign]


def _floors(endpoints: list[str], sample: Tick) -> tuple[dict[str, Floor], Callable[[], None]]:
    """The floors, each on its own PUB socket (nobody subscribed, as the feed's), and their close.

    ``floor_us``: a bare send of one prebuilt market-data message, the cheapest pyzmq has;
    ``pbfloor_us``: the tick's topic, its protobuf encoding (the library's, one reused message) and
    that send -- what any feed that publishes each tick as ``MarketData`` at once must do."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    socks = [pub_socket(ctx, endpoint) for endpoint in endpoints]
    bare_sock, pb_sock = socks
    topic, body = md_topic(sample.symbol, sample.exchange), encode_market_data(sample)
    send = BackendSocket.send
    more, last = zmq.SNDMORE | zmq.NOBLOCK, zmq.NOBLOCK
    encode = MarketDataEncoder()

    def bare(tick: Tick) -> None:
        send(bare_sock, topic, more)
        send(bare_sock, body, last)

    def with_encode(tick: Tick) -> None:
        data = encode(tick)
        send(pb_sock, md_topic(tick.symbol, tick.exchange), more)
        send(pb_sock, data, last)

    def close() -> None:
        for sock in socks:
            sock.close(0)

    return {"floor_us": bare, "pbfloor_us": with_encode}, close


def main(config: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    floors: dict[str, Floor] = {}
    close_floors = None
    if config.get("floor_endpoints"):
        sample = next(iter(SimSource(config["symbols"], rate=0, exchange=config["exchange"], seed=7)))
        floors, close_floors = _floors(list(config["floor_endpoints"]), sample)
    samples = _Samples(floors)
    if config.get("instrument"):
        _instrument(samples)
    app = make_app(settings)
    publisher = ChunkPublisher(app, timeout=settings.publish_timeout)
    # What `ttquant feed` runs: the end-to-end confirmer (its CPU is in cpu_s) unless RESEND_AFTER=0.
    confirmer = make_confirmer(settings, app, publisher)
    source = SimSource(config["symbols"], rate=float(config["rate"]), exchange=config["exchange"], seed=7,
                       sleep=samples.sleep)
    profile = cProfile.Profile() if config.get("profile") else None
    t_start = time.time_ns()
    cpu0, main0 = os.times(), time.thread_time()
    if profile:
        profile.enable()
    counts = runner.run_feed(settings, source, publish=confirmer or publisher, duration=float(config["duration"]),
                             retry_interval=float(config.get("retry_interval", 1.0)))
    if profile:
        profile.disable()
        profile.dump_stats(config["profile"])
    cpu1, main1 = os.times(), time.thread_time()
    if confirmer is not None:
        confirmer.close()
    publisher.close()
    out: dict[str, Any] = {k: v for k, v in counts.items() if isinstance(v, int | float | bool)}
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    # The main thread runs the source and on_tick; the others (enqueuer, confirmer, spool, libzmq's
    # I/O) are what an outage changes in this process.
    out.update(t_start_ns=t_start, t_end_ns=time.time_ns(), cpu_s=cpu_s, main_cpu_s=round(main1 - main0, 3),
               bg_cpu_s=round(max(0.0, cpu_s - (main1 - main0)), 3))
    if close_floors is not None:
        close_floors()
    if config.get("instrument"):
        out.update(samples.figures())
    return out


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    print(json.dumps(result), flush=True)
