"""Pure parts of the bench report: the hot-path floor rows and ratio."""

from __future__ import annotations

from ttquant_tasks.bench.hotpath import with_ratios
from ttquant_tasks.bench.report import TARGETS, markdown


def test_floor_ratio_is_like_for_like_and_absent_without_a_floor() -> None:
    report = {"hot_healthy_p99_us": 60.0, "hot_floor_p99_us": 120.0, "hot_floor_nosub_p99_us": 30.0}
    assert with_ratios(report)["hot_p99_vs_floor"] == 2.0  # healthy has no subscriber: vs the no-subscriber floor
    assert "hot_p99_vs_floor" not in with_ratios({"hot_healthy_p99_us": 60.0})
    assert with_ratios({"hot_healthy_p99_us": 60.0, "hot_floor_nosub_p99_us": None})["hot_p99_vs_floor"] is None


def test_floor_rows_follow_the_hot_path_target_and_are_never_verdicts() -> None:
    report = {"hot_healthy_p99_us": 60.0, "hot_floor_p99_us": 120.0, "hot_floor_nosub_p99_us": 30.0,
              "hot_floor_noop_p99_us": 2.0, "hot_p99_vs_floor": 2.0}
    lines = markdown(report, ()).splitlines()
    at = next(i for i, line in enumerate(lines) if "`hot_healthy_p99_us`" in line)
    refs = lines[at + 1:at + 5]
    assert [r.split("`")[1] for r in refs] == ["hot_floor_nosub_p99_us", "hot_floor_p99_us",
                                               "hot_floor_noop_p99_us", "hot_p99_vs_floor"]
    assert all(r.endswith("| reference |") for r in refs)
    assert len(lines) == 2 + len(TARGETS) + 4
    assert "floor" not in markdown({}, ())  # no floor measured: no rows
