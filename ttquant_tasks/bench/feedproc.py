"""Child process: the real feed loop (``run_feed``) on a sim source, instrumented, result as JSON.

Usage (by the bench only): ``python -m ttquant_tasks.bench.feedproc '<json config>'`` with the
environment of the run.  Config keys: ``exchange``, ``symbols``, ``rate`` (ticks/s, 0 = max),
``duration`` (s), ``instrument`` (time every tick), ``floor_endpoint`` (bind the floor's PUB socket
there and interleave it, see below), ``profile`` (path for a cProfile dump).

Instrumentation wraps ``_Feed.on_tick`` -- ZMQ encode + send, chunk append and, when a chunk
fills, building its payload and handing it to the enqueuer -- with ``perf_counter_ns``; nothing
in ``runner.py`` is edited.  The last stdout line is one JSON object.

The sim paces itself by sleeping whenever it is 5 ms ahead of schedule, so ticks come in bursts,
as from a websocket.  The first tick after a sleep runs cold (here, a VM: after the vCPU idled,
Python and libzmq run several times slower) and those ticks set the p99; they are reported apart
(``hot_us_cold_*``, ``cold_share``).  With ``floor`` the bursts alternate: in one, ``on_tick`` is
timed; in the next, a bare two-frame send of a prebuilt message on a second PUB socket (nobody
subscribed, as the feed's) is timed and then ``on_tick`` runs untimed.  So the floor is measured
in the same process, under the same load and pacing, interleaved every 5 ms (``floor_us_*``).
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

from ..bus.codec import encode_market_data, md_topic
from ..feed import runner
from ..feed.sim import SimSource
from ..models import Tick
from ..runtime import make_confirmer
from ..settings import Settings
from ..tasks.app import make_app
from ..tasks.publisher import ChunkPublisher
from .report import summary

_SKIP = 1000  # first ticks not timed: imports, socket setup and the first broker connect


class _Samples:
    """Per-tick ns, ours and the floor's, each split into warm ticks and cold ones (after a sleep)."""

    def __init__(self) -> None:
        self.ours, self.ours_cold, self.floor, self.floor_cold = (array.array("q") for _ in range(4))
        self.slept = False  # set by the source's sleep, cleared by the next tick
        self.floor_turn = False
        self.seen = 0

    def sleep(self, seconds: float) -> None:
        self.slept = True
        time.sleep(seconds)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for prefix, warm, cold in (("hot_us", self.ours, self.ours_cold), ("floor_us", self.floor, self.floor_cold)):
            if not warm and not cold:
                continue
            out.update(summary(prefix, warm + cold, scale=1e-3))
            out.update(summary(f"{prefix}_cold", cold, scale=1e-3))
            out[f"{prefix}_cold_share"] = round(len(cold) / (len(warm) + len(cold)), 4)
        return out


def _instrument(samples: _Samples, floor: Callable[[], None] | None) -> None:
    original = runner._Feed.on_tick
    clock = time.perf_counter_ns

    def timed(self: runner._Feed, tick: Tick, now: float) -> None:
        cold = samples.slept
        samples.slept = False
        if cold and floor is not None:
            samples.floor_turn = not samples.floor_turn
        samples.seen += 1
        if samples.seen <= _SKIP:
            original(self, tick, now)
        elif samples.floor_turn:
            t0 = clock()
            floor()  # type: ignore[misc]  # floor_turn is only ever set with a floor
            t1 = clock()
            (samples.floor_cold if cold else samples.floor).append(t1 - t0)
            original(self, tick, now)  # untimed: the load stays that of the feed
        else:
            t0 = clock()
            original(self, tick, now)
            t1 = clock()
            (samples.ours_cold if cold else samples.ours).append(t1 - t0)

    runner._Feed.on_tick = timed  # type: ignore[method-assign]


def _floor_sender(endpoint: str, sample: Tick) -> tuple[Callable[[], None], Callable[[], None]]:
    """A bare send of one prebuilt market-data message, the cheapest pyzmq has, and its close."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)  # as the feed's publisher
    sock.bind(endpoint)
    topic, body = md_topic(sample.symbol, sample.exchange), encode_market_data(sample)
    send = BackendSocket.send
    more, last = zmq.SNDMORE | zmq.NOBLOCK, zmq.NOBLOCK

    def bare() -> None:
        send(sock, topic, more)
        send(sock, body, last)

    return bare, sock.close


def main(config: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    samples = _Samples()
    floor, close_floor = None, None
    if config.get("floor_endpoint"):
        sample = next(iter(SimSource(config["symbols"], rate=0, exchange=config["exchange"], seed=7)))
        floor, close_floor = _floor_sender(config["floor_endpoint"], sample)
    if config.get("instrument"):
        _instrument(samples, floor)
    app = make_app(settings)
    publisher = ChunkPublisher(app, timeout=settings.publish_timeout)
    # What `ttquant feed` runs: the end-to-end confirmer (its CPU is in cpu_s) unless RESEND_AFTER=0.
    confirmer = make_confirmer(settings, app, publisher)
    source = SimSource(config["symbols"], rate=float(config["rate"]), exchange=config["exchange"], seed=7,
                       sleep=samples.sleep)
    profile = cProfile.Profile() if config.get("profile") else None
    t_start = time.time_ns()
    cpu0 = os.times()
    if profile:
        profile.enable()
    counts = runner.run_feed(settings, source, publish=confirmer or publisher, duration=float(config["duration"]),
                             retry_interval=float(config.get("retry_interval", 1.0)))
    if profile:
        profile.disable()
        profile.dump_stats(config["profile"])
    cpu1 = os.times()
    if confirmer is not None:
        confirmer.close()
    publisher.close()
    out: dict[str, Any] = {k: v for k, v in counts.items() if isinstance(v, int | float | bool)}
    out.update(t_start_ns=t_start, t_end_ns=time.time_ns(),
               cpu_s=(cpu1.user - cpu0.user) + (cpu1.system - cpu0.system))
    if close_floor is not None:
        close_floor()
    if config.get("instrument"):
        out.update(samples.figures())
    return out


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    print(json.dumps(result), flush=True)
