"""Measurement 4: the feed's per-tick hot path (ZMQ encode + send, chunk append, chunk hand-over),
p50/p99/max in µs, healthy and under each outage, measured inside the feed process
(:mod:`.feedproc` wraps ``_Feed.on_tick``).

Conditions: ``healthy``; ``db_down`` (the worker's database behind a cut :class:`.gate.Gate`:
tasks fail and retry while the feed runs); ``broker_refused`` (broker URL on a closed port);
``broker_hung`` (a listener that accepts and never answers).  Same paced rate for all, so the
figures differ only by the condition.  The sim source has no parse step; the Binance frame parse
is timed separately (``parse_us_p50``), in this process, on a recorded-shape frame.

Each condition also times two floors, interleaved with it in the same feed process (the paced
source's bursts take turns): a bare two-frame send of a prebuilt message (``hot_<cond>_floor_*``),
and the tick's protobuf encoding plus that send (``hot_<cond>_pbfloor_*``).
``*_cold_*`` are the ticks right after one of the source's pacing sleeps (``*_cold_share`` of them),
which set the p99 on this machine.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from . import procs
from .gate import closed_port
from .report import Figure, ratio, summary

_FRAME = json.dumps({"stream": "btcusdt@trade", "data": {
    "e": "trade", "E": 1732540000125, "s": "BTCUSDT", "t": 4123456789, "p": "64321.10000000",
    "q": "0.00120000", "T": 1732540000123, "m": True, "M": True}})


def run_condition(name: str, env: dict[str, str], log_dir: Path, rate: float, duration: float,
                  symbols: list[str]) -> dict[str, Figure]:
    config: dict[str, Any] = {"exchange": f"bench-hot-{name.replace('_', '-')}", "symbols": symbols,
                              "rate": rate, "duration": duration, "instrument": True,
                              "floor_endpoints": [f"tcp://127.0.0.1:{closed_port()}" for _ in range(2)]}
    feed = procs.run_feed_child(env, log_dir, config, timeout=duration + 60)
    out: dict[str, Figure] = {}
    for src, dst in (("hot_us", f"hot_{name}"), ("floor_us", f"hot_{name}_floor"),
                     ("pbfloor_us", f"hot_{name}_pbfloor")):
        for part in ("", "_cold"):
            out.update({f"{dst}{part}_{q}_us": feed.get(f"{src}{part}_{q}") for q in ("p50", "p99", "max")})
        out[f"{dst}_cold_share"] = feed.get(f"{src}_cold_share")
    out[f"hot_{name}_ticks"] = feed.get("hot_us_n")
    out[f"hot_{name}_floor_ticks"] = feed.get("floor_us_n")
    out[f"hot_{name}_pbfloor_ticks"] = feed.get("pbfloor_us_n")
    out[f"hot_{name}_spooled_chunks"] = feed.get("spooled")
    out[f"hot_{name}_lost_chunks"] = feed.get("lost")
    return out


def run_floor(env: dict[str, str], log_dir: Path, rate: float, duration: float,
              symbols: list[str]) -> dict[str, Figure]:
    """The floor of the hot path on this machine (:mod:`.floorproc`): a bare pyzmq send loop, with
    and without a subscriber, and a timing-only loop, at the hot-path run's rate and pacing.

    The subscriber is a thread of this (otherwise idle) process, as a strategy would be another
    process; ``hot_floor_received`` counts what it got, so "connected" is checked, not assumed.
    """
    sub_endpoint = f"tcp://127.0.0.1:{closed_port()}"
    config: dict[str, Any] = {"exchange": "bench-floor", "symbols": symbols, "rate": rate, "duration": duration,
                              "sub_endpoint": sub_endpoint, "nosub_endpoint": f"tcp://127.0.0.1:{closed_port()}"}
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(sub_endpoint)  # before the child binds: ZeroMQ connects as soon as it does
    received = [0]
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            if sub.poll(50):
                while True:
                    try:
                        sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    received[0] += 1

    listener = threading.Thread(target=drain, name="bench-floor-sub", daemon=True)
    listener.start()
    try:
        floor = procs.run_feed_child(env, log_dir, config, timeout=3 * duration + 60,
                                     module="ttquant_tasks.bench.floorproc")
    finally:
        done.set()
        listener.join(5)
        sub.close(0)
    return {
        "hot_floor_p50_us": floor.get("sub_p50"), "hot_floor_p99_us": floor.get("sub_p99"),
        "hot_floor_max_us": floor.get("sub_max"), "hot_floor_received": received[0],
        "hot_floor_nosub_p50_us": floor.get("nosub_p50"), "hot_floor_nosub_p99_us": floor.get("nosub_p99"),
        "hot_floor_noop_p50_us": floor.get("noop_p50"), "hot_floor_noop_p99_us": floor.get("noop_p99"),
    }


def with_ratios(report: dict[str, Figure]) -> dict[str, Figure]:
    """``hot_<cond>_p99_vs_healthy`` for each outage condition present; ``hot_p99_vs_floor`` and
    ``hot_p99_vs_pbfloor`` (healthy p99 over each floor interleaved with it); and
    ``hot_<cond>_p99_vs_healthy_floor_adj``: the outage ratio with each p99 first divided by its own
    interleaved floor, so that the machine getting slower or faster between the conditions' runs
    (which moves the floor as much as the feed) cancels out."""
    base = report.get("hot_healthy_p99_us")
    out: dict[str, Figure] = {}
    for c in ("db_down", "broker_refused", "broker_hung"):
        if f"hot_{c}_p99_us" in report:
            out[f"hot_{c}_p99_vs_healthy"] = ratio(report.get(f"hot_{c}_p99_us"), base)
            if f"hot_{c}_floor_p99_us" in report and "hot_healthy_floor_p99_us" in report:
                out[f"hot_{c}_p99_vs_healthy_floor_adj"] = ratio(
                    ratio(report.get(f"hot_{c}_p99_us"), report.get(f"hot_{c}_floor_p99_us")),
                    ratio(base, report.get("hot_healthy_floor_p99_us")))
    # Like for like: same process, load and pacing, and no subscriber on any of the PUB sockets.
    for floor, key in (("floor", "hot_p99_vs_floor"), ("pbfloor", "hot_p99_vs_pbfloor")):
        if f"hot_healthy_{floor}_p99_us" in report:
            out[key] = ratio(base, report.get(f"hot_healthy_{floor}_p99_us"))
    return out


def parse_cost(n: int = 20_000) -> dict[str, Figure]:
    """µs per Binance trade frame parsed (JSON decode + validation -> Tick), this process."""
    from ..feed.binance import parse_frame

    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        parse_frame(_FRAME, 0)
        samples.append(time.perf_counter_ns() - t0)
    s = summary("parse_us", samples[n // 10:], scale=1e-3)
    return {k: v for k, v in s.items() if k in ("parse_us_p50", "parse_us_p99")}
