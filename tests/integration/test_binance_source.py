"""BinanceSource and the REST backfill against the fake Binance server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_binance import ConnScript, FakeBinance
from ttquant_tasks.feed.backfill import fetch_trades
from ttquant_tasks.feed.binance import parse_frame
from ttquant_tasks.feed.record import Recorder, replay
from ttquant_tasks.feed.ws_source import BinanceSource
from ttquant_tasks.models import Tick

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def expected(symbol: str, trade_id: int) -> Tick:
    t = FakeBinance.trade(symbol, trade_id)
    return Tick("binance", symbol, trade_id, t["price"], t["qty"], t["time"] * 1_000_000, 0, t["isBuyerMaker"])


def same_trade(tick: Tick) -> bool:
    return dataclasses.replace(tick, local_time=0) == expected(tick.symbol, tick.trade_id)


def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``cond`` until true or ``timeout``; the caller asserts the result (no timing is asserted)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def ids_by_symbol(ticks: list[Tick]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for t in ticks:
        out[t.symbol].append(t.trade_id)
    return out


def assert_every_id_once(ticks: list[Tick]) -> None:
    for symbol, ids in ids_by_symbol(ticks).items():
        assert len(ids) == len(set(ids)), f"{symbol}: duplicates"
        assert sorted(ids) == list(range(min(ids), max(ids) + 1)), f"{symbol}: holes"


class Running:
    """Iterates a BinanceSource on a thread, collecting ticks and gaps."""

    def __init__(self, fake: FakeBinance, **kwargs: Any) -> None:
        self.gaps: list[tuple[str, int, int]] = []
        self.ticks: list[Tick] = []
        options: dict[str, Any] = {"stale_after_s": 5.0, "reconnect_backoff": lambda attempt: 0.2, "poll_s": 0.05}
        options.update(kwargs)
        self.source = BinanceSource(fake.ws_base, fake.symbols, on_gap=self._gap, **options)
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _gap(self, symbol: str, first: int, last: int) -> None:
        self.gaps.append((symbol, first, last))

    def _loop(self) -> None:
        for tick in self.source:
            self.ticks.append(tick)

    def count(self, symbol: str) -> int:
        return sum(1 for t in list(self.ticks) if t.symbol == symbol)

    def __enter__(self) -> Running:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.source.close()
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(ping_interval_s=0.3) as f:
        yield f


def test_ticks_arrive_with_exact_values_and_pings_are_answered(fake: FakeBinance, tmp_path: Path) -> None:
    with Recorder(tmp_path / "frames.jsonl.gz") as recorder, Running(fake, recorder=recorder) as run:
        assert wait_until(lambda: len(run.ticks) >= 200 and len(fake.pongs) >= 2)
    replayed = [parse_frame(raw, t) for t, raw in replay(tmp_path / "frames.jsonl.gz")]
    assert replayed[: len(run.ticks)] == run.ticks  # the recording reproduces the feed exactly
    assert all(same_trade(t) for t in run.ticks)
    assert run.ticks[0].price.endswith("00000")  # exact exchange string, trailing zeros kept
    assert set(fake.pongs) == {b"0"}  # websocket-client echoed our ping payload
    assert_every_id_once(run.ticks)
    assert run.gaps == []
    assert run.source.counters["ticks"] == len(run.ticks)


def backfill_gaps(fake: FakeBinance, run: Running) -> list[Tick]:
    filled: list[Tick] = []
    for symbol, first, last in run.gaps:
        ticks, unfilled = fetch_trades(fake.rest_base, symbol, first, last)
        assert unfilled == []
        assert [t.trade_id for t in ticks] == list(range(first, last + 1))
        filled += ticks
    return filled


def test_dropped_connection_reconnects_and_backfill_fills_the_gap(fake: FakeBinance) -> None:
    fake.scripts[0] = ConnScript(drop_after=100)
    with Running(fake) as run:
        assert wait_until(lambda: fake.connections >= 2 and len(run.gaps) == 2 and len(run.ticks) >= 300)
    assert {g[0] for g in run.gaps} == set(fake.symbols)
    assert run.source.counters["disconnect.error"] + run.source.counters["disconnect.closed_by_server"] == 1
    filled = backfill_gaps(fake, run)
    every = run.ticks + filled
    assert_every_id_once(every)
    assert all(same_trade(t) for t in every)


def test_skipped_ids_are_reported_as_exactly_that_gap(fake: FakeBinance) -> None:
    with Running(fake) as run:
        assert wait_until(lambda: run.count("BTCUSDT") >= 20)
        start = fake.published("BTCUSDT") + 50
        fake.ws_skip.update(("BTCUSDT", i) for i in range(start, start + 7))
        assert wait_until(lambda: fake.published("BTCUSDT") > start + 20 and run.count("BTCUSDT") > 100)
    assert run.gaps == [("BTCUSDT", start, start + 6)]
    assert_every_id_once(run.ticks + backfill_gaps(fake, run))


def test_stale_connection_is_replaced(fake: FakeBinance) -> None:
    fake.scripts[0] = ConnScript(stale_after=60)
    with Running(fake, stale_after_s=1.0) as run:
        assert wait_until(lambda: run.source.counters["stale"] >= 1 and run.count("BTCUSDT") >= 200)
    assert fake.connections >= 2
    assert_every_id_once(run.ticks + backfill_gaps(fake, run))


def test_rotation_leaves_no_gap_and_no_duplicate(fake: FakeBinance) -> None:
    with Running(fake, max_age_s=2.0, overlap_s=0.3, max_overlap_s=5.0) as run:
        assert wait_until(lambda: run.source.counters["switches"] >= 3, timeout=20)
    counters = run.source.counters
    assert counters["rotation.age"] >= 3
    assert counters["duplicates"] > 0  # the connections really overlapped
    assert run.gaps == []
    assert_every_id_once(run.ticks)
    assert all(same_trade(t) for t in run.ticks)


def test_server_shutdown_opens_a_new_connection_at_once_without_gap(fake: FakeBinance) -> None:
    fake.scripts[0] = ConnScript(shutdown_after=50)
    with Running(fake, overlap_s=0.2, max_overlap_s=5.0) as run:
        assert wait_until(lambda: run.source.counters["switches"] >= 1 and run.count("BTCUSDT") >= 300)
    assert run.source.counters["server_shutdown"] == 1
    assert run.source.counters["rotation.server_shutdown"] == 1
    assert run.gaps == []
    assert_every_id_once(run.ticks)


def test_malformed_and_unknown_frames_are_counted_and_skipped(fake: FakeBinance) -> None:
    bad = [
        '{"stream":"btcusdt@trade","data":{"e":"trade"',
        '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{}}}',
        '{"result":null,"id":1}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":1.5,"q":"1","T":1,"m":true}}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"q":"1","T":1,"m":true}}',
    ]
    fake.scripts[0] = ConnScript(inject={20: bad[:3], 40: bad[3:]})
    with Running(fake) as run:
        assert wait_until(lambda: run.count("BTCUSDT") >= 100)
    c = run.source.counters
    assert [
        c[f"frame_error.{k}"]
        for k in ("malformed_json", "unknown_stream", "unknown_event", "bad_value", "missing_field")
    ] == [1, 1, 1, 1, 1]
    assert run.gaps == []
    assert_every_id_once(run.ticks)


def test_refused_connection_backs_off_exponentially() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempts: list[int] = []

    def backoff(attempt: int) -> float:
        attempts.append(attempt)
        return 0.05

    source = BinanceSource(f"ws://127.0.0.1:{port}", ["BTCUSDT"], reconnect_backoff=backoff, poll_s=0.05)
    thread = threading.Thread(target=lambda: list(source), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: len(attempts) >= 3)
    finally:
        source.close()
        thread.join(10)
    assert attempts[:3] == [0, 1, 2]
    assert source.counters["disconnect.connect_failed"] >= 3


# -- REST backfill ---------------------------------------------------------------------------------
@pytest.fixture
def rest_fake() -> Iterator[FakeBinance]:
    with FakeBinance(history=3000) as f:
        yield f


def test_backfill_respects_429_retry_after(rest_fake: FakeBinance) -> None:
    assert wait_until(lambda: rest_fake.published("BTCUSDT") >= rest_fake.first_id("BTCUSDT") + 1500)
    rest_fake.rest_429, rest_fake.retry_after_s = 2, 3
    slept: list[float] = []
    first = rest_fake.first_id("BTCUSDT")
    ticks, unfilled = fetch_trades(rest_fake.rest_base, "BTCUSDT", first, first + 1499, sleep=slept.append)
    assert unfilled == []
    assert [t.trade_id for t in ticks] == list(range(first, first + 1500))
    assert all(same_trade(t) for t in ticks)
    assert slept == [3.0, 3.0]
    assert [s for s, _ in rest_fake.rest_calls] == [429, 429, 200, 200]
    assert rest_fake.rest_calls[2][1] == {"symbol": "BTCUSDT", "fromId": str(first), "limit": "1000"}


def test_backfill_returns_what_it_cannot_fetch_as_unfilled(rest_fake: FakeBinance) -> None:
    first = rest_fake.first_id("ETHUSDT")
    assert wait_until(lambda: rest_fake.published("ETHUSDT") >= first + 10)
    rest_fake.pause()
    top = rest_fake.published("ETHUSDT")
    ticks, unfilled = fetch_trades(rest_fake.rest_base, "ETHUSDT", top - 4, top + 20)
    assert [t.trade_id for t in ticks] == list(range(top - 4, top + 1))
    assert unfilled == [(top + 1, top + 20)]  # not published: a known gap, not silence
    ticks, unfilled = fetch_trades(rest_fake.rest_base, "ETHUSDT", first, first + 9, max_ids=4)
    assert [t.trade_id for t in ticks] == list(range(first, first + 4))
    assert unfilled == [(first + 4, first + 9)]
    rest_fake.rest_429, rest_fake.retry_after_s = 1, 500
    ticks, unfilled = fetch_trades(rest_fake.rest_base, "ETHUSDT", first, first + 9, max_wait_s=60)
    assert (ticks, unfilled) == ([], [(first, first + 9)])  # Retry-After beyond our bound: give up, say so


def test_backfill_waits_for_the_next_minute_when_weight_is_used_up(rest_fake: FakeBinance) -> None:
    first = rest_fake.first_id("BTCUSDT")
    assert wait_until(lambda: rest_fake.published("BTCUSDT") >= first + 2500)
    slept: list[float] = []
    ticks, unfilled = fetch_trades(
        rest_fake.rest_base,
        "BTCUSDT",
        first,
        first + 2499,
        max_weight_per_min=60,
        sleep=slept.append,
        wall=lambda: 30.0,
    )
    assert unfilled == [] and len(ticks) == 2500
    # weight after calls 1, 2: 25, 50; the third call would pass 60, so wait ~30 s before it
    assert slept == [pytest.approx(30.1)]


def test_backfill_sends_api_key_header_and_refuses_bad_range(rest_fake: FakeBinance) -> None:
    with pytest.raises(ValueError, match="range"):
        fetch_trades(rest_fake.rest_base, "BTCUSDT", 10, 5)
    first = rest_fake.first_id("BTCUSDT")
    assert wait_until(lambda: rest_fake.published("BTCUSDT") >= first + 2)
    fetch_trades(rest_fake.rest_base, "BTCUSDT", first, first + 1, api_key="k3y")
    fetch_trades(rest_fake.rest_base, "BTCUSDT", first, first + 1)
    assert rest_fake.rest_api_keys == ["k3y", None]
