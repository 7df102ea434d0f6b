"""Child process: the floor under the feed's hot path -- what Python + pyzmq cost per tick here, with
no ttquant code in the timed section, in a process doing nothing else (the like-for-like floor,
interleaved with the feed under its load, is :mod:`.feedproc`'s).  Result as one JSON line on stdout.

Usage (by the bench only): ``python -m ttquant_tasks.bench.floorproc '<json config>'``.  Config keys:
``symbols``, ``rate`` (ticks/s), ``duration`` (s per loop), ``sub_endpoint`` and ``nosub_endpoint``
(where to bind the PUB sockets; the bench connects a subscriber to the first only).

Three loops, one after the other, each paced exactly as the hot-path run (the same
:class:`~ttquant_tasks.feed.sim.SimSource`, same rate and seed, ticks generated outside the timed
section as in the feed) and timed the same way (``perf_counter_ns`` around one call per tick):

* ``noop``: nothing between the two clock reads (timing and scheduling noise alone);
* ``nosub``: a two-frame send (pyzmq's Cython ``send`` per frame, as the feed's publisher) of one
  prebuilt market-data message on a PUB socket nobody subscribes to (as the bench's feed);
* ``sub``: the same on a PUB socket with one subscriber connected (a strategy listening).

The first 1,000 ticks of each loop are skipped, as in :mod:`.feedproc`.
"""

from __future__ import annotations

import array
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.backend import Socket as BackendSocket

from ..bus.codec import encode_market_data, md_topic
from ..feed.sim import SimSource
from .report import summary

_SKIP = 1000


def _loop(symbols: list[str], rate: float, duration: float,
          body: Callable[[], bool]) -> tuple[array.array[int], int]:
    """Samples (ns) of ``body()`` per paced tick, and how many calls returned True (sent)."""
    samples: array.array[int] = array.array("q")
    append = samples.append
    clock = time.perf_counter_ns
    monotonic = time.monotonic
    source = SimSource(symbols, rate=rate, exchange="bench-floor", seed=7)
    sent = 0
    deadline = monotonic() + duration
    for _tick in source:
        t0 = clock()
        ok = body()
        append(clock() - t0)
        sent += ok
        if monotonic() >= deadline:
            break
    return samples, sent


def _noop() -> bool:
    return False


def _sender(sock: zmq.Socket[bytes], message: tuple[bytes, bytes]) -> Callable[[], bool]:
    send = BackendSocket.send  # the cheapest send pyzmq has, as the feed's publisher uses
    topic, body_bytes = message
    more, last = zmq.SNDMORE | zmq.NOBLOCK, zmq.NOBLOCK

    def body() -> bool:
        try:
            send(sock, topic, more)
        except zmq.Again:
            return False
        send(sock, body_bytes, last)
        return True

    return body


def pub_socket(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    """A PUB socket bound to ``endpoint``, set up as the feed's publisher (linger 0, same HWM)."""
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)  # as the feed's publisher
    sock.bind(endpoint)
    return sock


def main(config: dict[str, Any]) -> dict[str, Any]:
    symbols, rate, duration = list(config["symbols"]), float(config["rate"]), float(config["duration"])
    sample = next(iter(SimSource(symbols, rate=0, exchange="bench-floor", seed=7)))
    message = (md_topic(sample.symbol, sample.exchange), encode_market_data(sample))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    out: dict[str, Any] = {}
    for name, endpoint in (("noop", None), ("nosub", config["nosub_endpoint"]), ("sub", config["sub_endpoint"])):
        sock = pub_socket(ctx, endpoint) if endpoint else None
        if sock is not None:
            time.sleep(0.5)  # let the subscriber (if any) connect and subscribe before the clock runs
        samples, sent = _loop(symbols, rate, duration, _sender(sock, message) if sock is not None else _noop)
        if sock is not None:
            sock.close(0)
        out.update(summary(name, samples[_SKIP:] if len(samples) > 2 * _SKIP else samples, scale=1e-3))
        out[f"{name}_sent"] = sent
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
