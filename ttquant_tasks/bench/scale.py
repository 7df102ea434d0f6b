"""Sizes of a run: quick or full, times an optional ``--scale`` factor (tests use 0.01)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Counts are ticks, durations seconds, rates ticks per second."""

    copy_ticks: int
    rowbyrow_ticks: int
    e2e_duration: float
    hot_rate: float
    hot_duration: float
    hot_rounds: int
    flow_rate: float
    flow_duration: float
    order_rate: float
    query_ticks: int
    outage_rate: float
    outage_pre: float
    outage_down: float
    outage_post: float

    @classmethod
    def of(cls, quick: bool, scale: float = 1.0) -> Sizes:
        if not 0 < scale <= 1:
            raise ValueError(f"--scale must be in (0, 1], got {scale}")
        base = cls(
            copy_ticks=200_000, rowbyrow_ticks=20_000, e2e_duration=10.0,
            hot_rate=5000.0, hot_duration=5.0, hot_rounds=1,
            flow_rate=5000.0, flow_duration=10.0, order_rate=20.0, query_ticks=200_000,
            outage_rate=1000.0, outage_pre=3.0, outage_down=10.0, outage_post=5.0,
        ) if quick else cls(
            copy_ticks=1_000_000, rowbyrow_ticks=50_000, e2e_duration=30.0,
            hot_rate=5000.0, hot_duration=10.0, hot_rounds=3,
            flow_rate=20000.0, flow_duration=30.0, order_rate=20.0, query_ticks=10_000_000,
            outage_rate=5000.0, outage_pre=5.0, outage_down=60.0, outage_post=10.0,
        )
        if scale == 1.0:
            return base

        def n(v: int, floor: int) -> int:
            return max(floor, int(v * scale))

        def s(v: float, floor: float) -> float:
            return max(floor, round(v * scale, 2))

        # Durations shrink less than counts (floors): each phase still needs a few chunk ages.
        return cls(
            copy_ticks=n(base.copy_ticks, 2000), rowbyrow_ticks=n(base.rowbyrow_ticks, 500),
            e2e_duration=s(base.e2e_duration, 2.0), hot_rate=base.hot_rate, hot_duration=s(base.hot_duration, 1.5),
            hot_rounds=1,
            flow_rate=min(base.flow_rate, 1000.0), flow_duration=s(base.flow_duration, 4.0),
            order_rate=base.order_rate, query_ticks=n(base.query_ticks, 5000),
            outage_rate=min(base.outage_rate, 500.0), outage_pre=1.0, outage_down=s(base.outage_down, 2.0),
            outage_post=1.0,
        )
