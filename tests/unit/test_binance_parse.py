"""binance.parse_frame against recorded-shape frames, plus fuzzing: only FrameError may escape."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttquant_tasks.errors import PayloadError
from ttquant_tasks.feed import binance
from ttquant_tasks.feed.binance import FRAME_ERROR_KINDS, FrameError, combined_stream_url, parse_frame
from ttquant_tasks.feed.record import Recorder, replay
from ttquant_tasks.models import Tick

FIXTURES = json.loads((Path(__file__).parents[1] / "fixtures" / "binance_frames.json").read_text())
LOCAL = 1_732_540_000_130_000_000


def _raw(case: dict[str, Any]) -> str | bytes:
    return bytes.fromhex(case["raw_hex"]) if "raw_hex" in case else case["raw"]


@pytest.mark.parametrize("case", FIXTURES["good"], ids=lambda c: c["name"])
def test_good_frames_parse_exactly(case: dict[str, Any]) -> None:
    parsed = parse_frame(_raw(case), LOCAL)
    assert type(parsed).__name__ == case["type"]
    fields = dataclasses.asdict(parsed)
    for key, value in case["expect"].items():
        assert fields[key] == value, key
        assert type(fields[key]) is type(value), key  # "64321.12000000" stays that exact string
    assert fields["local_time"] == LOCAL


def test_bytes_and_str_frames_agree() -> None:
    raw = FIXTURES["good"][0]["raw"]
    assert parse_frame(raw.encode(), LOCAL) == parse_frame(raw, LOCAL)


def test_combined_and_raw_payloads_agree() -> None:
    raw = json.loads(FIXTURES["good"][0]["raw"])
    assert parse_frame(json.dumps(raw["data"]), LOCAL) == parse_frame(json.dumps(raw), LOCAL)


@pytest.mark.parametrize("case", FIXTURES["bad"], ids=lambda c: c["name"])
def test_bad_frames_raise_frame_error_of_kind(case: dict[str, Any]) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(_raw(case), LOCAL)
    assert info.value.kind == case["kind"]
    assert isinstance(info.value, PayloadError)
    assert str(info.value).startswith(case["kind"])


def test_every_error_kind_is_covered_by_a_fixture() -> None:
    assert {c["kind"] for c in FIXTURES["bad"]} == set(FRAME_ERROR_KINDS)


def test_rest_trade_parses_exactly() -> None:
    rows = json.loads((Path(__file__).parents[1] / "fixtures" / "binance_historical_trades.json").read_text())
    tick = binance.parse_rest_trade(rows[0], "BTCUSDT", LOCAL)
    assert tick == Tick(
        "binance", "BTCUSDT", 4123456789, "64321.12000000", "0.00120000", 1732540000123000000, LOCAL, True
    )
    with pytest.raises(FrameError, match="isBuyerMaker"):
        binance.parse_rest_trade({k: v for k, v in rows[1].items() if k != "isBuyerMaker"}, "BTCUSDT", LOCAL)


def test_combined_stream_url() -> None:
    url = combined_stream_url("wss://stream.binance.com:9443/", ["BTCUSDT", "ethusdt"], ("trade", "bookTicker"))
    assert url == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/btcusdt@bookTicker/ethusdt@trade/ethusdt@bookTicker"
    )
    with pytest.raises(ValueError, match="kline"):
        combined_stream_url("wss://x", ["BTCUSDT"], ("kline",))
    with pytest.raises(ValueError, match="symbol"):
        combined_stream_url("wss://x", ["BTC/USDT"])
    with pytest.raises(ValueError):
        combined_stream_url("wss://x", [])


# -- fuzzing ------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=20,
)


def _parse_or_frame_error(raw: str | bytes) -> object:
    try:
        return parse_frame(raw, LOCAL)
    except FrameError as exc:
        assert exc.kind in FRAME_ERROR_KINDS
        return exc


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzz_random_json(value: object) -> None:
    _parse_or_frame_error(json.dumps(value))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _parse_or_frame_error(raw)


def test_deeply_nested_json_is_a_frame_error() -> None:
    with pytest.raises(FrameError) as info:
        parse_frame("[" * 100_000 + "]" * 100_000, LOCAL)
    assert info.value.kind == "malformed_json"


_GOOD_DATA = [json.loads(c["raw"]) for c in FIXTURES["good"]]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(_GOOD_DATA), st.data())
def test_fuzz_mutated_real_frames(frame: dict[str, Any], data: st.DataObject) -> None:
    target = frame.get("data", frame.get("event", frame))
    target = dict(target)
    key = data.draw(st.sampled_from(sorted(target)))
    action = data.draw(st.sampled_from(["drop", "replace"]))
    if action == "drop":
        del target[key]
    else:
        target[key] = data.draw(json_values)
    mutated = dict(frame)
    if "data" in frame:
        mutated["data"] = target
    elif "event" in frame:
        mutated["event"] = target
    else:
        mutated = target
    result = _parse_or_frame_error(json.dumps(mutated))
    if isinstance(result, Tick):  # whatever survives a mutation is still well-formed
        assert isinstance(result.trade_id, int) and not isinstance(result.trade_id, bool)
        assert isinstance(result.price, str) and isinstance(result.qty, str)
        assert isinstance(result.buyer_maker, bool)


# -- record / replay -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["frames.jsonl", "frames.jsonl.gz"])
def test_record_and_replay_round_trip(tmp_path: Path, name: str) -> None:
    frames = [(LOCAL + i, _raw(c)) for i, c in enumerate(FIXTURES["good"])]
    with Recorder(tmp_path / name) as rec:
        for t, raw in frames:
            rec.write(t, raw)
    if name.endswith(".gz"):
        with gzip.open(tmp_path / name, "rt") as fh:
            assert fh.readline().startswith('{"t":')
    replayed = list(replay(tmp_path / name))
    assert replayed == frames
    assert [parse_frame(r, t) for t, r in replayed] == [parse_frame(r, t) for t, r in frames]


def test_replay_paces_by_recorded_spacing(tmp_path: Path) -> None:
    with Recorder(tmp_path / "f.jsonl") as rec:
        rec.write(0, "a")
        rec.write(2_000_000_000, "b")  # 2 s later
    slept: list[float] = []
    out = list(replay(tmp_path / "f.jsonl", speed=4.0, sleep=slept.append, clock=lambda: 0.0))
    assert out == [(0, "a"), (2_000_000_000, "b")]
    assert slept == [0.5]


def test_replay_names_the_corrupt_line(tmp_path: Path) -> None:
    (tmp_path / "f.jsonl").write_text('{"t":1,"f":"a"}\n\n{"t":"x"}\n')
    with pytest.raises(PayloadError, match="line 3"):
        list(replay(tmp_path / "f.jsonl"))
