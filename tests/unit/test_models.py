from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttquant_tasks.errors import PayloadError, backoff, is_retryable
from ttquant_tasks.models import Tick, chunk_payload, payload_rows

TICKS = [Tick("binance", "BTCUSDT", 7, "64321.12345678", "0.00012345", 1_700_000_000_000_000_000,
              1_700_000_000_000_500_000, True),
         Tick("binance", "ETHUSDT", 9, "3000.1", "12", 1_700_000_000_001_000_000, 1_700_000_000_001_000_001, None)]


def test_payload_round_trips_through_json_exactly() -> None:
    payload = json.loads(json.dumps(chunk_payload("binance", TICKS)))
    assert list(payload_rows(payload)) == TICKS


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.update(v=2), "version"),
        (lambda p: p.update(exchange=""), "exchange"),
        (lambda p: p.update(price=["1"]), "price"),
        (lambda p: p.update(price=[1.5, "2"]), "price[0]"),
        (lambda p: p.update(qty=["-1", "2"]), "qty[0]"),
        (lambda p: p.update(qty=["NaN", "2"]), "qty[0]"),
        (lambda p: p.update(trade_id=["7", 9]), "trade_id[0]"),
        (lambda p: p.update(trade_id=[True, 9]), "trade_id[0]"),
        (lambda p: p.update(symbol=["", "X"]), "symbol[0]"),
        (lambda p: p.update(buyer_maker=["yes", None]), "buyer_maker[0]"),
        (lambda p: p.pop("local_time"), "local_time"),
    ],
)
def test_bad_payload_names_the_problem(mutate: Any, message: str) -> None:
    payload = chunk_payload("binance", TICKS)
    mutate(payload)
    with pytest.raises(PayloadError, match=message.replace("[", r"\[")):
        list(payload_rows(payload))


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=20))
def test_any_json_is_rows_or_payload_error(value: Any) -> None:
    with contextlib.suppress(PayloadError):
        list(payload_rows(value))


def test_backoff_grows_and_is_capped() -> None:
    assert 0.25 <= backoff(0) <= 0.5
    assert 4 <= backoff(4) <= 8
    assert backoff(50, cap=30) <= 30
    with pytest.raises(ValueError):
        backoff(-1)


def test_is_retryable() -> None:
    import psycopg2

    assert is_retryable(psycopg2.OperationalError("server closed the connection"))
    assert is_retryable(ConnectionRefusedError())
    assert not is_retryable(PayloadError("bad"))
    assert not is_retryable(KeyError("x"))
