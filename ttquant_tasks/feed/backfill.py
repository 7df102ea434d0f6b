"""Fetch missed trades by id from Binance REST (``GET /api/v3/historicalTrades``).

Bounded on every axis, and honest about what it could not get: :func:`fetch_trades` returns the
ticks it fetched *and* the id ranges it did not, so a caller records those as known gaps instead of
skipping them silently.

* weight: each call costs 25 of the 6,000-per-minute IP budget; after every response the used weight
  (``X-MBX-USED-WEIGHT-1M``) is compared with ``max_weight_per_min`` and we wait for the next minute
  when the next call would exceed it;
* 429 (rate limit) waits ``Retry-After`` seconds (at most ``max_wait_s`` in total); 418 (IP ban) stops at
  once — retrying a ban lengthens it;
* ``max_ids`` caps one backfill (the rest is returned unfilled); ``deadline_s`` caps its wall time.

Idempotent: fetching a range twice returns the same ticks (the writer deduplicates by trade id).
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import backoff
from ..models import Tick
from .binance import FrameError, parse_rest_trade

log = logging.getLogger(__name__)

WEIGHT_PER_CALL = 25
PAGE = 1000  # Binance's maximum ``limit``


@dataclasses.dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _get(url: str, headers: Mapping[str, str], timeout_s: float) -> _Response:
    req = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return _Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read() if exc.fp is not None else b""
        return _Response(exc.code, {k.lower(): v for k, v in exc.headers.items()}, body)


def _retry_after_s(headers: Mapping[str, str], default: float) -> float:
    value = headers.get("retry-after")
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date; anything else (garbage from a proxy) means "use the default"
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time())
    except (ValueError, TypeError, OverflowError):
        return default


def _seconds_to_next_minute(now: float) -> float:
    return 60.0 - (now % 60.0) + 0.1  # Binance's weight window is the wall-clock minute


def fetch_trades(
    rest_base: str,
    symbol: str,
    from_id: int,
    to_id: int,
    *,
    api_key: str | None = None,
    timeout_s: float = 10.0,
    max_weight_per_min: int = 3000,
    max_ids: int = 200_000,
    max_wait_s: float = 120.0,
    deadline_s: float = 300.0,
    max_errors: int = 5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    local_time_ns: Callable[[], int] = time.time_ns,
) -> tuple[list[Tick], list[tuple[int, int]]]:
    """Trades ``from_id..to_id`` (inclusive) of ``symbol`` and the ranges that could not be fetched.

    Returns ``(ticks, unfilled)``: ticks ascending by id, each id once, each ``local_time`` the fetch
    time (ns, UTC); ``unfilled`` inclusive ``(first, last)`` ranges.  Every id of the request is in
    exactly one of the two.  Network errors and 5xx are retried ``max_errors`` times with backoff.
    ``max_weight_per_min`` leaves headroom for other users of the IP budget (6,000).
    """
    if from_id < 0 or to_id < from_id:
        raise ValueError(f"bad id range {from_id}..{to_id}")
    ticks: list[Tick] = []
    unfilled: list[tuple[int, int]] = []
    if to_id - from_id + 1 > max_ids:
        unfilled.append((from_id + max_ids, to_id))
        to_id = from_id + max_ids - 1
    headers = {"X-MBX-APIKEY": api_key} if api_key else {}
    started = clock()
    waited = 0.0
    errors = 0
    cur = from_id

    def wait(seconds: float) -> bool:
        nonlocal waited
        if waited + seconds > max_wait_s or clock() - started + seconds > deadline_s:
            return False
        waited += seconds
        sleep(seconds)
        return True

    while cur <= to_id:
        if clock() - started > deadline_s:
            break
        query = urllib.parse.urlencode({"symbol": symbol.upper(), "fromId": cur, "limit": PAGE})
        url = f"{rest_base.rstrip('/')}/api/v3/historicalTrades?{query}"
        try:
            resp = _get(url, headers, timeout_s)
        except (OSError, urllib.error.URLError) as exc:  # refused, reset, timeout
            errors += 1
            log.warning("backfill %s from %d: %s (error %d/%d)", symbol, cur, exc, errors, max_errors)
            if errors > max_errors or not wait(backoff(errors - 1)):
                break
            continue
        if resp.status == 418:
            log.error("backfill %s: IP banned (418), stopping; retry-after=%s", symbol, resp.headers.get("retry-after"))
            break
        if resp.status == 429:
            delay = _retry_after_s(resp.headers, 1.0)
            log.warning("backfill %s: 429, waiting %.1fs", symbol, delay)
            if not wait(delay):
                break
            continue
        if resp.status != 200:
            errors += 1
            log.warning("backfill %s: HTTP %d %s", symbol, resp.status, resp.body[:200])
            if resp.status < 500 or errors > max_errors or not wait(backoff(errors - 1)):
                break
            continue
        page = _parse_page(resp.body, symbol, local_time_ns())
        if page is None:
            break
        got = [t for t in page if cur <= t.trade_id <= to_id]
        if not got:
            break  # nothing (yet) at or after ``cur``: report the rest unfilled
        for t in got:  # consecutive ids are what the gap logic relies on: check, don't trust
            if t.trade_id > cur:
                unfilled.append((cur, t.trade_id - 1))
            if t.trade_id >= cur:
                ticks.append(t)
                cur = t.trade_id + 1
        used = resp.headers.get("x-mbx-used-weight-1m")
        if (
            cur <= to_id
            and used is not None
            and used.isascii()  # "²".isdigit() is True, but int() refuses it
            and used.isdigit()
            and int(used) + WEIGHT_PER_CALL > max_weight_per_min
            and not wait(_seconds_to_next_minute(wall()))
        ):
            break
    if cur <= to_id:
        unfilled.append((cur, to_id))
    unfilled.sort()
    return ticks, unfilled


def _parse_page(body: bytes, symbol: str, now_ns: int) -> list[Tick] | None:
    try:
        data: Any = json.loads(body)
    except ValueError:
        log.error("backfill %s: response is not JSON: %r", symbol, body[:200])
        return None
    if not isinstance(data, list):
        log.error("backfill %s: expected a list, got %r", symbol, str(data)[:200])
        return None
    try:
        return sorted((parse_rest_trade(obj, symbol.upper(), now_ns) for obj in data), key=lambda t: t.trade_id)
    except FrameError as exc:
        log.error("backfill %s: bad trade in response: %s", symbol, exc)
        return None
