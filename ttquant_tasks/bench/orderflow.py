"""Measurements 5 and 6, in one phase while ticks flow at a set rate:

* order sent by a strategy (ZMQ PUSH) -> its ``orders`` row committed (NOTIFY at commit), p50/p99 ms;
* order sent -> its ``Trade`` received on the gateway's trade PUB, p50/p99 ms;
* trade (exchange) time of a tick -> its ``market_data`` row committed, p50/p99 ms, every 10th tick,
  at the default chunk age.

"Sent" is the strategy's send time: it includes the ZMQ hop to the gateway (tens of µs), so the
order figures are upper bounds of "received -> committed".  Orders are market orders of 0.001,
alternating BUY/SELL per strategy (4 strategies), at ``order_rate`` per second in total, within
the packaged risk limits; rejections are counted.  Five unmeasured warm-up orders go first (the
orders worker's first task opens its database connection).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from ..bus.codec import decode_trade, encode_order
from . import listen, procs
from .gate import closed_port
from .report import Figure, summary

EXCHANGE = "bench-flow"
FLOOR_EXCHANGE = "bench-floor"
_WARMUP_ORDERS = 5  # unmeasured, before the measured ones (see measure)


def _flow_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with fresh loopback ports for the feed's PUB and the gateway's PULL and trade PUB."""
    md_port = closed_port()
    return {**env, "ZMQ_PUB_ENDPOINT": f"tcp://127.0.0.1:{md_port}",
            "ZMQ_PULL_ENDPOINT": f"tcp://127.0.0.1:{closed_port()}",
            "ZMQ_TRADE_ENDPOINT": f"tcp://127.0.0.1:{closed_port()}",
            "TTQUANT_MD_CONNECT": f"tcp://127.0.0.1:{md_port}"}


def _feed(env: dict[str, str], log_dir: Path, exchange: str, rate: float, duration: float) -> subprocess.Popen[bytes]:
    """The sim feed of the phase, in the background (ticks for the ticks worker, prices for the gateway)."""
    return procs.start_feed_child(env, log_dir, {"exchange": exchange, "symbols": ["BTCUSDT", "ETHUSDT"],
                                                 "rate": rate, "duration": duration})


def _warm_up(send: Callable[[int], None], duration: float) -> None:
    """Send ``_WARMUP_ORDERS`` unmeasured orders (``send(i)``), then wait out the warm-up.

    The gateway needs a last price before market orders fill.  Meanwhile a few unmeasured orders
    warm the orders worker: its pool child's first task imports the storage code and opens its
    database connection (~0.4 s here), a once-per-start cost that would otherwise set the p99 of
    150 orders (the hot path skips its first 1,000 ticks for the same reason).
    """
    warm_end = time.monotonic() + min(2.0, duration / 3)
    for i in range(_WARMUP_ORDERS):
        send(i)
        time.sleep(0.1)
    time.sleep(max(0.0, warm_end - time.monotonic()))


def _ms(prefix: str, values_ns: list[int]) -> dict[str, Figure]:
    """``<prefix>_p50_ms``, ``<prefix>_p99_ms`` and ``<prefix>_n`` of latencies in ns."""
    s = summary(prefix, values_ns, scale=1e-6)
    return {f"{prefix}_p50_ms": s[f"{prefix}_p50"], f"{prefix}_p99_ms": s[f"{prefix}_p99"],
            f"{prefix}_n": s[f"{prefix}_n"]}


def measure(uri: str, env: dict[str, str], log_dir: Path, rate: float, duration: float,
            order_rate: float) -> dict[str, Figure]:
    env = _flow_env(env)
    listen.install(uri, EXCHANGE)
    listener = listen.Listener(uri, ("bench_tick", "bench_order"))
    listener.start()
    gw = procs.gateway(env, log_dir).start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    sub = ctx.socket(zmq.SUB)
    sent: dict[str, int] = {}
    traded: dict[str, int] = {}
    statuses = {"FILLED": 0, "REJECTED": 0}
    try:
        push.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.LINGER, 0)
        push.connect(env["ZMQ_PULL_ENDPOINT"])
        sub.setsockopt(zmq.SUBSCRIBE, b"trade.")
        sub.connect(env["ZMQ_TRADE_ENDPOINT"])
        feed_proc = _feed(env, log_dir, EXCHANGE, rate, duration)
        t_end = time.monotonic() + duration - 0.5
        _warm_up(lambda w: push.send(encode_order(
            order_id=f"bench-warm{w}", strategy_id="bench-warm", symbol="BTCUSDT", price=0.0, quantity="0.001",
            side="BUY" if w % 2 == 0 else "SELL", timestamp=time.time_ns())), duration)
        i, next_send = 0, time.monotonic()
        while time.monotonic() < t_end + 1.0:
            now = time.monotonic()
            if now >= next_send and now < t_end:
                strategy = f"bench-s{i % 4}"
                oid = f"bench-o{i}"
                side = "BUY" if (i // 4) % 2 == 0 else "SELL"
                ts = time.time_ns()
                push.send(encode_order(order_id=oid, strategy_id=strategy, symbol="BTCUSDT", price=0.0,
                                       quantity="0.001", side=side, timestamp=ts))
                sent[oid] = ts
                i += 1
                next_send += 1.0 / order_rate
            if sub.poll(2):
                while True:
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    got = time.time_ns()
                    trade = decode_trade(frames[-1])
                    if trade.order_id not in sent:  # a warm-up order
                        continue
                    traded.setdefault(trade.order_id, got)
                    statuses[trade.status] = statuses.get(trade.status, 0) + 1
        feed = procs.feed_result(feed_proc, timeout=duration + 60)
        time.sleep(3.0)  # let the last chunk age out and the worker commit it
    finally:
        push.close(0)
        sub.close(0)
        gw.stop()
        listener.close()
        listen.remove(uri)
    commits = [got - sent[p] for ch, p, got in listener.events if ch == "bench_order" and p in sent]
    visible = [got - int(p) for ch, p, got in listener.events if ch == "bench_tick"]
    trades = [traded[o] - sent[o] for o in traded if o in sent]
    out: dict[str, Figure] = {
        "flow_rate_set": rate,
        "flow_ticks_s": round(int(feed["ticks"]) / duration),
        "orders_sent": len(sent), "orders_committed": len(commits), "orders_traded": len(trades),
        "orders_filled": statuses.get("FILLED", 0), "orders_rejected": statuses.get("REJECTED", 0),
    }
    for prefix, values in (("order_commit", commits), ("order_trade", trades), ("tick_visible", visible)):
        out.update(_ms(prefix, values))
    return out


def measure_floor(uri: str, env: dict[str, str], log_dir: Path, rate: float, duration: float,
                  probe_rate: float) -> dict[str, Figure]:
    """The floor under ``order_commit_*``, measured like it right after it (``order_floor_*_ms``).

    The same load (ticks at ``rate`` to the ticks worker, the gateway running and reading them)
    and the same orders worker, but instead of an order through the gateway the bench process
    itself sends the bench-only task ``ttquant.bench_probe`` (:mod:`.workerproc`) to the
    ``orders`` queue at ``probe_rate``: Celery publish, broker, the worker's prefork hop, one
    autocommit INSERT and its commit, and nothing of ours.  Send -> row committed (NOTIFY).
    """
    from ..settings import Settings
    from ..tasks.app import ORDERS, make_app
    from .workerproc import PROBE_TASK

    env = _flow_env(env)
    app = make_app(Settings.from_env(env))
    listen.install_probe(uri)
    listener = listen.Listener(uri, ("bench_probe",))
    listener.start()
    gw = procs.gateway(env, log_dir).start()
    sent: dict[str, int] = {}
    try:
        feed_proc = _feed(env, log_dir, FLOOR_EXCHANGE, rate, duration)
        t_end = time.monotonic() + duration - 0.5
        _warm_up(lambda w: app.send_task(PROBE_TASK, args=[f"warm{w}", uri], queue=ORDERS), duration)
        i, next_send = 0, time.monotonic()
        while (now := time.monotonic()) < t_end:
            if now < next_send:
                time.sleep(min(next_send - now, 0.002))
                continue
            probe_id = f"p{i}"
            sent[probe_id] = time.time_ns()
            app.send_task(PROBE_TASK, args=[probe_id, uri], queue=ORDERS)
            i += 1
            next_send += 1.0 / probe_rate
        procs.feed_result(feed_proc, timeout=duration + 60)
        time.sleep(1.0)
    finally:
        gw.stop()
        listener.close()
        listen.remove_probe(uri)
    return _ms("order_floor", [got - sent[p] for _, p, got in listener.events if p in sent])
