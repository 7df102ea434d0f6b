from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttquant_tasks.errors import PayloadError, backoff, is_retryable
from ttquant_tasks.models import Tick, chunk_payload, payload_rows, plain_columns
from ttquant_tasks.storage.writers import columns_csv, ticks_csv

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
    # The column-at-a-time path refuses it too (a shape error itself, a bad value by stepping aside).
    try:
        assert plain_columns(payload) is None
    except PayloadError as exc:
        assert message.split("[")[0] in str(exc) or message == "version"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.update(price=["1\n2", "3"]),  # two numbers once joined: the separators are counted
        lambda p: p.update(qty=["1e-3", "2"]),  # valid, another notation: the per-value path keeps it
        lambda p: p.update(trade_id=[2**63, 9]),
        lambda p: p.update(exchange_time=[-1, 9]),
        lambda p: p.update(symbol=["X" * 65, "Y"]),
        lambda p: p.update(symbol=[7, "Y"]),
        lambda p: p.update(buyer_maker=[1, None]),  # 1 == True, but not a bool
        lambda p: p.update(price=[" 1", "2"]),
    ],
)
def test_values_not_in_their_common_form_leave_the_fast_path(mutate: Any) -> None:
    payload = chunk_payload("binance", TICKS)
    mutate(payload)
    assert plain_columns(payload) is None


def test_fast_path_gives_the_columns_and_the_same_csv() -> None:
    payload = json.loads(json.dumps(chunk_payload("binance", TICKS)))
    plain = plain_columns(payload)
    assert plain is not None
    exchange, columns = plain
    assert exchange == "binance" and columns[1] == [7, 9] and columns[6] == [True, None]
    assert columns_csv(exchange, columns) == ticks_csv(TICKS)
    empty = plain_columns(chunk_payload("binance", []))
    assert empty is not None and empty[1][0] == []


_symbols = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64)
_decimals = st.one_of(st.decimals(min_value=0, max_value=10**12, places=8, allow_nan=False).map(lambda d: f"{d:f}"),
                      st.sampled_from(["1e-3", "5.", ".5", "0", "1E+2", "-1", "x", "1\n2", ""]))


@given(st.lists(st.tuples(_symbols, st.integers(0, 2**63 - 1), _decimals, _decimals, st.integers(0, 2**63 - 1),
                          st.integers(0, 2**63 - 1), st.sampled_from([True, False, None])), max_size=6))
def test_fast_path_agrees_with_the_per_value_path(rows: list[tuple[Any, ...]]) -> None:
    payload = {"v": 1, "exchange": "binance", "chunk_id": "c",
               **{c: [r[i] for r in rows] for i, c in enumerate(
                   ("symbol", "trade_id", "price", "qty", "exchange_time", "local_time", "buyer_maker"))}}
    plain = plain_columns(payload)
    try:
        ticks = list(payload_rows(payload))
    except PayloadError:
        assert plain is None  # what the per-value path refuses never passes the fast one
        return
    if plain is not None:  # taken: exactly the rows the per-value path gives, as CSV
        assert columns_csv(*plain) == ticks_csv(ticks)


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
