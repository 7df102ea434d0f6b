"""argparse value types that fail with a message naming what is wrong."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..settings import Settings

if TYPE_CHECKING:
    # argparse has no public name for the object add_subparsers() returns (subscriptable only for mypy).
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def rate(raw: str) -> float:
    """Ticks per second, or ``max`` (0.0: unpaced)."""
    if raw == "max":
        return 0.0
    try:
        v = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be ticks per second or 'max', got {raw!r}") from None
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"must be > 0, got {raw!r}")
    return v


def _positive(raw: str, cast: Callable[[str], float], what: str) -> float:
    try:
        v = cast(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {raw!r}") from None
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {raw!r}")
    return v


def seconds(raw: str) -> float:
    return _positive(raw, float, "a positive number of seconds")


def positive_int(raw: str) -> int:
    return int(_positive(raw, int, "a positive integer"))


def resolved(settings: Settings, start: bool = True, *, broker: bool = True) -> Settings:
    """``settings`` with the database and (``broker``) the broker resolved (embedded ones found or started)."""
    from ..services import resolve

    return resolve(settings, start=start, broker=broker)
