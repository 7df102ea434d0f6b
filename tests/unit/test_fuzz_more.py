"""More bad input, fuzzed with hypothesis: REST backfill responses and risk TOML.

* Backfill (:func:`ttquant_tasks.feed.backfill.fetch_trades`) against a tiny loopback HTTP server
  answering random statuses, headers and JSON bodies: nothing escapes, every requested id ends up
  either fetched or reported unfilled (exactly one of the two), and the good pages served before
  the bad one are kept.
* Risk limits (:func:`ttquant_tasks.gateway.risk.limits_from_mapping` / ``load_limits``): random
  documents and random TOML text either load or raise ``ConfigError`` -- nothing else escapes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttquant_tasks.errors import ConfigError
from ttquant_tasks.feed.backfill import fetch_trades
from ttquant_tasks.gateway.risk import RiskLimits, limits_from_mapping, load_limits

# ---------------------------------------------------------------- backfill responses

Response = tuple[int, dict[str, str], bytes]


class ScriptedRest:
    """Loopback HTTP server answering each GET with the next scripted response (then ``200 []``)."""

    def __init__(self) -> None:
        self.script: list[Response] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- http.server's name
                with owner.lock:
                    status, headers, body = owner.script.pop(0) if owner.script else (200, {}, b"[]")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def rest() -> Iterator[ScriptedRest]:
    server = ScriptedRest()
    yield server
    server.close()


def good_trade(i: int) -> dict[str, Any]:
    return {"id": i, "price": f"64000.{i % 100:02d}", "qty": "0.00100000", "quoteQty": "64.0",
            "time": 1_732_540_000_000 + i, "isBuyerMaker": i % 2 == 0, "isBestMatch": True}


LATIN1 = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                 max_size=12)
JSON_SCALAR = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
TRADE_FIELD = st.sampled_from(["id", "price", "qty", "time", "isBuyerMaker", "quoteQty", "x"])
BAD_TRADE = st.dictionaries(TRADE_FIELD, JSON_SCALAR | st.sampled_from(["1e5", "-1", "NaN", "0.1", ""]), max_size=7)
BODY = st.one_of(
    st.binary(max_size=60),
    st.recursive(JSON_SCALAR, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids,
                                                                                       max_size=4),
                 max_leaves=10).map(lambda v: json.dumps(v).encode()),
    st.lists(BAD_TRADE, max_size=4).map(lambda v: json.dumps(v).encode()),
    # right shape, ids anywhere (repeats, gaps, out of range, negative)
    st.lists(st.integers(-5, 3000), max_size=8).map(lambda ids: json.dumps([good_trade(i) for i in ids]).encode()),
)
HEADERS = st.dictionaries(st.sampled_from(["Retry-After", "X-MBX-USED-WEIGHT-1M"]),
                          LATIN1 | st.sampled_from(["5", "2999", "6000", "\u00b2", "nan", "inf", "-3", "1e400",
                                                    "Wed, 21 Oct 2015 07:28:00 GMT"]),
                          max_size=2)
RESPONSE = st.tuples(st.sampled_from([200, 200, 200, 400, 403, 404, 418, 429, 500, 502, 503]), HEADERS, BODY)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(good_pages=st.integers(0, 2), page_len=st.integers(1, 5), junk=st.lists(RESPONSE, min_size=1, max_size=3))
def test_backfill_survives_any_response_and_keeps_good_pages(rest: ScriptedRest, good_pages: int, page_len: int,
                                                             junk: list[Response]) -> None:
    from_id, to_id = 100, 199
    good = [(200, {"X-MBX-USED-WEIGHT-1M": "25"},
             json.dumps([good_trade(from_id + p * page_len + i) for i in range(page_len)]).encode())
            for p in range(good_pages)]
    with rest.lock:
        rest.script = good + junk
    ticks, unfilled = fetch_trades(rest.base, "BTCUSDT", from_id, to_id, timeout_s=5, max_errors=2,
                                   sleep=lambda s: None, max_wait_s=30)
    ids = [t.trade_id for t in ticks]
    assert ids == sorted(set(ids)), "ticks ascending, each id once"
    missing = [i for a, b in unfilled for i in range(a, b + 1)]
    assert sorted(ids + missing) == list(range(from_id, to_id + 1)), "every id fetched or reported unfilled, once"
    kept = set(range(from_id, from_id + good_pages * page_len))
    assert kept <= set(ids), "trades of the good pages before the bad response are kept"
    for t in ticks:
        assert t.symbol == "BTCUSDT" and Decimal(t.price) > 0 and Decimal(t.qty) > 0


# ---------------------------------------------------------------- risk TOML

KNOWN = {"orders": ["max_age_ms", "max_quantity", "max_notional"], "prices": ["min", "max", "band_bps"],
         "rate": ["global_per_second", "per_strategy_per_second"], "positions": ["default_max", "max"]}
VALUE = (st.none() | st.booleans() | st.integers(-10, 2**64) | st.decimals(allow_nan=True, allow_infinity=True)
         | st.floats() | st.text(max_size=10)
         | st.sampled_from(["1", "0", "-1", "1e9999999999", "sNaN", "0.001", "1_0"])
         | st.lists(st.integers(), max_size=2))
SYMBOLS = st.sampled_from(["BTCUSDT", "btcusdt", "ETH-USDT", "ß", "Ⅻ", "", "SOL1", "A B"]) | st.text(max_size=6)


@st.composite
def risk_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for table in draw(st.lists(st.sampled_from([*KNOWN, "nope"]), max_size=4, unique=True)):
        keys = KNOWN.get(table, ["x"]) + ["typo"]
        body: dict[str, Any] = {}
        for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            body[key] = (draw(st.dictionaries(SYMBOLS, VALUE, max_size=3) | VALUE) if key == "max" else draw(VALUE))
        doc[table] = draw(st.just(body) | VALUE) if table != "positions" else body
    return doc


@settings(max_examples=300, deadline=None)
@given(risk_docs())
def test_risk_mapping_loads_or_raises_config_error(doc: dict[str, Any]) -> None:
    try:
        limits = limits_from_mapping(doc, "fuzz.toml")
    except ConfigError as exc:
        assert "fuzz.toml" in str(exc)
        return
    assert isinstance(limits, RiskLimits)
    for value in (limits.max_quantity, limits.max_notional, limits.max_price):
        assert value is None or (value.is_finite() and value > 0)
    for value in (limits.min_price, limits.band_bps, limits.default_max_position, *limits.max_position.values()):
        assert value is None or (value.is_finite() and value >= 0)


def toml_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


TOML_LINE = st.one_of(
    st.sampled_from(["[orders]", "[prices]", "[rate]", "[positions]", "[positions.max]", "[[orders]]", "[x", "",
                     "# c", "max_age_ms = 1", "band_bps = 1e3", "min = inf", "max = nan", 'BTCUSDT = "2"']),
    st.tuples(st.sampled_from([k for ks in KNOWN.values() for k in ks] + ["BTCUSDT", "x"]),
              st.integers(-5, 2**70) | st.floats() | st.text(max_size=8) | st.booleans())
    .map(lambda kv: f"{kv[0]} = {toml_value(kv[1])}"),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TOML_LINE, max_size=8) | st.binary(max_size=40).map(lambda b: [b.decode("latin-1")]))
def test_risk_toml_file_loads_or_raises_config_error(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "risk.toml"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    try:
        load_limits(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
