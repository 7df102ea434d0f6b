"""Child process: the real feed loop (``run_feed``) on a sim source, instrumented, result as JSON.

Usage (by the bench only): ``python -m ttquant_tasks.bench.feedproc '<json config>'`` with the
environment of the run.  Config keys: ``exchange``, ``symbols``, ``rate`` (ticks/s, 0 = max),
``duration`` (s), ``instrument`` (time every tick), ``profile`` (path for a cProfile dump).

Instrumentation wraps ``_Feed.on_tick`` -- ZMQ encode + send, chunk append and, when a chunk
fills, building its payload and handing it to the enqueuer -- with ``perf_counter_ns``; nothing
in ``runner.py`` is edited.  The last stdout line is one JSON object.
"""

from __future__ import annotations

import array
import cProfile
import json
import os
import sys
import time
from typing import Any

from ..feed import runner
from ..feed.sim import SimSource
from ..models import Tick
from ..runtime import make_confirmer
from ..settings import Settings
from ..tasks.app import make_app
from ..tasks.publisher import ChunkPublisher
from .report import summary


def _instrument(samples: array.array[int]) -> None:
    original = runner._Feed.on_tick
    clock = time.perf_counter_ns
    append = samples.append

    def timed(self: runner._Feed, tick: Tick, now: float) -> None:
        t0 = clock()
        original(self, tick, now)
        append(clock() - t0)

    runner._Feed.on_tick = timed  # type: ignore[method-assign]


def main(config: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    samples: array.array[int] = array.array("q")
    if config.get("instrument"):
        _instrument(samples)
    app = make_app(settings)
    publisher = ChunkPublisher(app, timeout=settings.publish_timeout)
    # What `ttquant feed` runs: the end-to-end confirmer (its CPU is in cpu_s) unless RESEND_AFTER=0.
    confirmer = make_confirmer(settings, app, publisher)
    source = SimSource(config["symbols"], rate=float(config["rate"]), exchange=config["exchange"], seed=7)
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
    if config.get("instrument"):
        # Skip the first 1000 ticks: imports, socket setup and the first broker connect.
        out.update(summary("hot_us", samples[1000:] if len(samples) > 2000 else samples, scale=1e-3))
    return out


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    print(json.dumps(result), flush=True)
