"""What the write-ahead journal adds to the order path: latency of ``Journal.append`` (``-m bench``).

Prints p50/p99/max in microseconds for a typical record, with the background fsync thread
running, and for comparison an fsync per record (what the journal avoids).  No timing assertions:
run ``pytest -m bench -s tests/unit/test_journal_bench.py`` and read the figures.
"""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from pathlib import Path

import pytest

from ttquant_tasks.bus.codec import encode_order
from ttquant_tasks.gateway.exchanges.paper import PaperExchange
from ttquant_tasks.gateway.journal import Journal
from ttquant_tasks.gateway.orders import Fill
from ttquant_tasks.gateway.records import fill_record
from ttquant_tasks.gateway.risk import limits_from_mapping
from ttquant_tasks.gateway.service import OrderService

pytestmark = pytest.mark.bench


def _record(i: int) -> dict[str, object]:
    fill = Fill(trade_id=f"paper-{i:012d}", order_id=f"strategy-1-{i:08d}", strategy_id="strategy-1",
                symbol="BTCUSDT", side="BUY", price=Decimal("64321.12345678"), quantity=Decimal("0.003"),
                commission=Decimal("0.19296337"), time_ns=time.time_ns())
    return fill_record(fill, Decimal("-0.19296337"))


def _figures(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    return {"n": len(s), "p50_us": round(s[len(s) // 2] / 1000, 1), "p99_us": round(s[len(s) * 99 // 100] / 1000, 1),
            "max_us": round(s[-1] / 1000, 1)}


def test_append_latency(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")  # 1 MiB segments, fsync every 0.1 s in the background
    journal.open()
    records = [_record(i) for i in range(20_000)]
    samples = []
    try:
        for i, rec in enumerate(records):
            t0 = time.perf_counter_ns()
            seq = journal.append(rec)
            samples.append(time.perf_counter_ns() - t0)
            journal.handed_over(seq)
            if i % 4 == 3:
                time.sleep(0.0002)  # orders arrive, they do not stream back to back
    finally:
        journal.close()
    figures = _figures(samples)
    figures.update(record_bytes=len(json.dumps(records[0])), fsyncs=journal.counts["fsyncs"],
                   segments_trimmed=journal.counts["trimmed_segments"])
    print("JOURNAL_APPEND " + json.dumps(figures))


def test_fsync_per_record_for_comparison(tmp_path: Path) -> None:
    path = tmp_path / "fsync.wal"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    data = json.dumps(_record(0)).encode()
    samples = []
    try:
        for _ in range(300):
            t0 = time.perf_counter_ns()
            os.write(fd, data)
            os.fsync(fd)
            samples.append(time.perf_counter_ns() - t0)
    finally:
        os.close(fd)
    print("FSYNC_PER_RECORD " + json.dumps(_figures(samples)))


def test_added_latency_per_filled_order(tmp_path: Path) -> None:
    """What the gateway adds per market order that fills: its NEW record in one write, then the
    fill, position snapshot and final status in another (``Gateway._on_order``); compared with
    ``OrderService.handle`` alone (decode, risk, paper fill, encode the trade)."""
    journal = Journal(tmp_path / "journal")
    journal.open()
    records: list[dict[str, object]] = []
    service = OrderService(exchange=PaperExchange(), limits=limits_from_mapping({"positions": {"default_max": "1e9"}}),
                           submit=records.append, exchange_name="paper")
    service.on_price("BTCUSDT", Decimal("64321.1"))
    handle_ns, journal_ns = [], []
    try:
        for i in range(5000):
            msg = encode_order(order_id=f"o-{i}", strategy_id="s1", symbol="BTCUSDT", price=0.0, quantity="0.003",
                               side="BUY" if i % 2 else "SELL", timestamp=time.time_ns())
            records.clear()
            t0 = time.perf_counter_ns()
            service.handle(msg)
            t1 = time.perf_counter_ns()
            seqs = journal.append_many(records[:1]) + journal.append_many(records[1:])
            t2 = time.perf_counter_ns()
            handle_ns.append(t1 - t0)
            journal_ns.append(t2 - t1)
            for seq in seqs:
                journal.handed_over(seq)
            time.sleep(0.0002)
    finally:
        journal.close()
    print("ORDER_HANDLE " + json.dumps(_figures(handle_ns)))
    print("ORDER_JOURNAL_ADDED " + json.dumps({**_figures(journal_ns), "records_per_order": len(records)}))
