"""Clock faults through the real worker: exchange timestamps out of order, duplicate frames.

Promise: a tick is stored once per (exchange, symbol, trade_id, time) -- the natural key -- so a
frame delivered twice (within one chunk, across chunks, or a whole chunk re-sent) lands once, and
exchange timestamps that go backwards or arrive in any order change nothing.

Trade ids repeated across websocket reconnects (overlapping connections during rotation, a resumed
stream after a drop) are covered end to end by
``tests/integration/test_binance_feed.py::test_every_fault_ends_with_every_id_stored_once``
(``ttquant audit`` clean: every id once).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest

from tests.support.checks import make_ticks, stored_ids, unique_exchange
from tests.support.stack import client_app
from tests.support.waiting import wait_for
from ttquant_tasks.models import Tick, chunk_payload

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(120)]


def stored_times(uri: str, exchange: str, symbol: str) -> dict[int, int]:
    conn = psycopg2.connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT trade_id, exchange_time FROM market_data WHERE exchange = %s AND symbol = %s",
                        (exchange, symbol))
            return {int(i): int(t) for i, t in cur.fetchall()}
    finally:
        conn.close()


def test_out_of_order_times_and_duplicate_frames_land_once(schema_db: str, redis_url: str,
                                                            stack_env: Callable[..., dict[str, str]],
                                                            start_worker: Callable[..., Any]) -> None:
    rng = random.Random(8)
    exchange = unique_exchange("clk")
    ticks = make_ticks(exchange, "BTCUSDT", 1, 150)
    # Exchange clocks that jump back and forth by up to 5 s (ids stay the truth).
    ticks = [dataclasses.replace(t, exchange_time=t.exchange_time + rng.randint(-5_000, 5_000) * 1_000_000)
             for t in ticks]
    by_id = {t.trade_id: t for t in ticks}

    def chunk(ids: list[int]) -> list[Tick]:
        out = [by_id[i] for i in ids]
        rng.shuffle(out)  # arrival order unrelated to id or time
        return out

    a = chunk([*range(1, 101), *range(10, 20), 42, 42, 42])  # duplicates inside one chunk
    b = chunk([*range(90, 151), *range(140, 145)])  # overlaps chunk a, duplicates inside
    env = stack_env(schema_db, redis_url)
    start_worker(env, queues="ticks")
    app = client_app(env)
    for ticks_of_chunk in (a, b, a):  # chunk a twice (a re-sent chunk gets a new chunk id)
        app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, ticks_of_chunk)])
    expected = list(range(1, 151))
    assert wait_for(lambda: stored_ids(schema_db, exchange, "BTCUSDT") == expected or None, timeout=60,
                    what="ids 1..150")
    # The last chunk was stored when it was acked; send a marker after it and wait for that, then recount.
    marker = make_ticks(exchange, "MARKER", 1, 1)
    app.send_task("ttquant.write_ticks", args=[chunk_payload(exchange, marker)])
    wait_for(lambda: stored_ids(schema_db, exchange, "MARKER") == [1], timeout=60, what="marker chunk")
    assert stored_ids(schema_db, exchange, "BTCUSDT") == expected, "each id exactly once"
    assert stored_times(schema_db, exchange, "BTCUSDT") == {i: t.exchange_time for i, t in by_id.items()}
