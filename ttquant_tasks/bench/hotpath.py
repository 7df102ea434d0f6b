"""Measurement 4: the feed's per-tick hot path (ZMQ encode + send, chunk append, chunk hand-over),
p50/p99/max in µs, healthy and under each outage, measured inside the feed process
(:mod:`.feedproc` wraps ``_Feed.on_tick``).

Conditions: ``healthy``; ``db_down`` (the worker's database behind a cut :class:`.gate.Gate`:
tasks fail and retry while the feed runs); ``broker_refused`` (broker URL on a closed port);
``broker_hung`` (a listener that accepts and never answers).  Same paced rate and the same workers
for all, and the conditions run in rounds (healthy, db_down, refused, hung; again...) with each
figure the median over the rounds (:func:`combine_rounds`): this VM's speed drifts by ±25% over
minutes (the floors below move with it), which one run per condition, minutes apart, would credit
to the conditions.  The sim source has no parse step; the Binance frame parse is timed separately
(``parse_us_p50``), in this process, on a recorded-shape frame.

Each condition also times two floors, interleaved with it in the same feed process (the paced
source's bursts take turns): a bare two-frame send of a prebuilt message (``hot_<cond>_floor_*``),
and the tick's protobuf encoding plus that send (``hot_<cond>_pbfloor_*``).
``*_cold_*`` are the ticks right after one of the source's pacing sleeps (``*_cold_share`` of them),
which set the p99 on this machine.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import zmq

from . import procs
from .gate import Gate, HungListener, closed_port
from .pipeline import wait_count
from .report import Figure, ratio, summary

_FRAME = json.dumps({"stream": "btcusdt@trade", "data": {
    "e": "trade", "E": 1732540000125, "s": "BTCUSDT", "t": 4123456789, "p": "64321.10000000",
    "q": "0.00120000", "T": 1732540000123, "m": True, "M": True}})


def run_condition(name: str, env: dict[str, str], log_dir: Path, rate: float, duration: float,
                  symbols: list[str], exchange: str | None = None) -> dict[str, Figure]:
    """One run of the feed under condition ``name`` (set up by the caller through ``env``): its
    ``hot_<name>_*`` figures, ``hot_<name>_sent`` the ticks it published."""
    config: dict[str, Any] = {"exchange": exchange or f"bench-hot-{name.replace('_', '-')}", "symbols": symbols,
                              "rate": rate, "duration": duration, "instrument": True,
                              "floor_endpoints": [f"tcp://127.0.0.1:{closed_port()}" for _ in range(2)]}
    busy0, steal0 = _machine_cpu_s()
    t0 = time.monotonic()
    feed = procs.run_feed_child(env, log_dir, config, timeout=duration + 60)
    busy1, steal1 = _machine_cpu_s()
    span = time.monotonic() - t0
    out: dict[str, Figure] = {
        # What else the condition costs, beside the timed ticks: the machine's busy cores over the run
        # (all processes, the feed's included; the hypervisor's steal apart), and the feed's own
        # threads other than its main one.
        f"hot_{name}_machine_busy_cores": round((busy1 - busy0) / span, 2),
        f"hot_{name}_machine_steal_cores": round((steal1 - steal0) / span, 3),
        f"hot_{name}_feed_main_cpu_s": feed.get("main_cpu_s"), f"hot_{name}_feed_bg_cpu_s": feed.get("bg_cpu_s"),
    }
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
    out[f"hot_{name}_sent"] = feed.get("ticks")
    return out


CONDITIONS = ("healthy", "db_down", "broker_refused", "broker_hung")


def run_rounds(uri: str, env: Callable[[str, str], dict[str, str]], log_dir: Path, gate: Gate, broker: str,
               rate: float, duration: float, symbols: list[str], rounds: int) -> dict[str, Figure]:
    """Every condition ``rounds`` times, interleaved, with the same workers (behind ``gate``, which
    ``db_down`` cuts); each condition's figures combined by :func:`combine_rounds`.

    ``env(phase, broker_url)`` is the feed's environment.  After a run whose chunks reached the broker
    (healthy, db_down), the next waits until its rows are all stored (``hot_<cond>_settle_s``: for
    db_down, how long after the database came back), so every run starts with idle workers.
    """
    hung = HungListener()
    urls = {"healthy": broker, "db_down": broker, "broker_refused": f"redis://127.0.0.1:{closed_port()}/0",
            "broker_hung": f"redis://127.0.0.1:{hung.port}/0"}
    runs: dict[str, list[dict[str, Figure]]] = {c: [] for c in CONDITIONS}
    try:
        for r in range(rounds):
            for cond in CONDITIONS:
                (gate.down if cond == "db_down" else gate.up)()
                exchange = f"bench-hot-{cond.replace('_', '-')}-{r}"
                out = run_condition(cond, env(f"hot-{cond}-{r}", urls[cond]), log_dir, rate, duration, symbols,
                                    exchange=exchange)
                gate.up()
                sent = out.get(f"hot_{cond}_sent")
                if urls[cond] == broker and isinstance(sent, int):
                    t0 = time.monotonic()
                    stored, _ = wait_count(uri, exchange, sent, stall_s=30.0)
                    out[f"hot_{cond}_settle_s"] = round(time.monotonic() - t0, 2) if stored >= sent else None
                runs[cond].append(out)
    finally:
        hung.close()
    combined: dict[str, Figure] = {}
    for cond, results in runs.items():
        if results:
            combined.update(combine_rounds(cond, results))
    return combined


_SUMMED = ("ticks", "floor_ticks", "pbfloor_ticks", "spooled_chunks", "lost_chunks", "sent")


def combine_rounds(name: str, rounds: list[dict[str, Figure]]) -> dict[str, Figure]:
    """The figures of several runs of one condition (rounds interleaved with the other conditions'):
    counts summed, maxima the largest, every other figure (p50, p99, floors, shares, CPU) the median
    over the rounds; ``hot_<name>_rounds`` and ``hot_<name>_p99_rounds`` (each round's p99, in µs).
    A figure missing from a round is None."""
    prefix = f"hot_{name}_"
    out: dict[str, Figure] = {}
    for key in rounds[0] if rounds else ():
        values = [r.get(key) for r in rounds]
        nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(nums) != len(values):
            out[key] = None
        elif key[len(prefix):] in _SUMMED:
            out[key] = sum(nums)
        elif key.endswith("max_us"):
            out[key] = max(nums)
        else:
            out[key] = round(statistics.median(nums), 3)
    out[f"{prefix}rounds"] = len(rounds)
    out[f"{prefix}p99_rounds"] = " ".join(str(r.get(f"{prefix}p99_us")) for r in rounds)
    return out


def _machine_cpu_s() -> tuple[float, float]:
    """CPU seconds since boot of the whole machine: (busy on every core, every process; stolen by
    the hypervisor for other guests, the noise of a shared VM)."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return float(busy), float(getattr(t, "steal", 0.0))


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
    (which moves the floor as much as the feed) cancels out; ``hot_<cond>_pbfloor_p99_vs_healthy``:
    the same ratio of the encode + send floor itself, code that no condition touches."""
    base = report.get("hot_healthy_p99_us")
    out: dict[str, Figure] = {}
    for c in ("db_down", "broker_refused", "broker_hung"):
        if f"hot_{c}_p99_us" in report:
            out[f"hot_{c}_p99_vs_healthy"] = ratio(report.get(f"hot_{c}_p99_us"), base)
            if f"hot_{c}_floor_p99_us" in report and "hot_healthy_floor_p99_us" in report:
                out[f"hot_{c}_p99_vs_healthy_floor_adj"] = ratio(
                    ratio(report.get(f"hot_{c}_p99_us"), report.get(f"hot_{c}_floor_p99_us")),
                    ratio(base, report.get("hot_healthy_floor_p99_us")))
            # The control: the same code (encode + send, nothing of the broker or the database) timed
            # under this condition and under healthy.  Above 1 only because the machine moved.
            if f"hot_{c}_pbfloor_p99_us" in report and "hot_healthy_pbfloor_p99_us" in report:
                out[f"hot_{c}_pbfloor_p99_vs_healthy"] = ratio(report.get(f"hot_{c}_pbfloor_p99_us"),
                                                               report.get("hot_healthy_pbfloor_p99_us"))
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
