"""Pure parts of the bench report: the hot-path floor rows and ratio, server CPU per tick."""

from __future__ import annotations

from ttquant_tasks.bench.hotpath import with_ratios
from ttquant_tasks.bench.report import TARGETS, markdown
from ttquant_tasks.bench.runner import cpu_ceiling
from ttquant_tasks.bench.servercpu import ServerCpu


def test_floor_ratio_is_like_for_like_and_absent_without_a_floor() -> None:
    report = {"hot_healthy_p99_us": 60.0, "hot_floor_nosub_p99_us": 20.0, "hot_healthy_floor_p99_us": 30.0}
    assert with_ratios(report)["hot_p99_vs_floor"] == 2.0  # vs the floor interleaved with healthy, not the idle one
    assert "hot_p99_vs_floor" not in with_ratios({"hot_healthy_p99_us": 60.0, "hot_floor_nosub_p99_us": 20.0})
    assert with_ratios({"hot_healthy_p99_us": 60.0, "hot_healthy_floor_p99_us": None})["hot_p99_vs_floor"] is None


def test_floor_rows_follow_the_hot_path_target_and_are_never_verdicts() -> None:
    report = {"hot_healthy_p99_us": 60.0, "hot_healthy_floor_p99_us": 30.0, "hot_p99_vs_floor": 2.0,
              "hot_healthy_cold_share": 0.04, "hot_healthy_cold_p50_us": 50.0, "hot_healthy_floor_cold_p50_us": 20.0,
              "hot_floor_nosub_p99_us": 15.0, "hot_floor_p99_us": 120.0, "hot_floor_noop_p99_us": 2.0}
    lines = markdown(report, ()).splitlines()
    at = next(i for i, line in enumerate(lines) if "`hot_healthy_p99_us`" in line)
    refs = lines[at + 1:at + 9]
    assert [r.split("`")[1] for r in refs] == [
        "hot_healthy_floor_p99_us", "hot_p99_vs_floor", "hot_healthy_cold_share", "hot_healthy_cold_p50_us",
        "hot_healthy_floor_cold_p50_us", "hot_floor_nosub_p99_us", "hot_floor_p99_us", "hot_floor_noop_p99_us"]
    assert all(r.endswith("| reference |") for r in refs)
    assert len(lines) == 2 + len(TARGETS) + 8
    assert "floor" not in markdown({}, ())  # no floor measured: no rows


def test_server_cpu_per_tick_counts_new_pids_whole_and_missing_groups_as_none() -> None:
    before = {"pg": {10: 1.0}, "pg_aux": {1: 5.0}, "redis": {7: 2.0}}
    after = {"pg": {10: 1.5, 11: 0.25}, "pg_aux": {1: 5.25}, "redis": {7: 2.5}}
    got = ServerCpu.per_tick(before, after, 1_000_000)
    assert got == {"pg_cpu_us_per_tick": 0.75, "pg_aux_cpu_us_per_tick": 0.25, "redis_cpu_us_per_tick": 0.5,
                   "server_cpu_us_per_tick": 1.5}
    partial = ServerCpu.per_tick({"redis": {7: 2.0}}, {"redis": {7: 3.0}}, 1_000_000)
    assert partial["redis_cpu_us_per_tick"] == 1.0 and partial["pg_cpu_us_per_tick"] is None
    assert partial["server_cpu_us_per_tick"] is None


def test_a_server_process_is_local_by_its_start_time_or_its_title() -> None:
    import os

    import psutil

    from ttquant_tasks.bench import servercpu

    me = psutil.Process(os.getpid())
    name = "python" if "python" in (me.name() + " ".join(me.cmdline())) else me.name()
    assert servercpu._is_local(os.getpid(), name, me.create_time())
    assert not servercpu._is_local(os.getpid(), name, me.create_time() - 60)  # another process's start
    assert servercpu._is_local(os.getpid(), name, me.create_time() - 60, title_mark=me.cmdline()[0])  # clock skew
    assert not servercpu._is_local(os.getpid(), "no-such-server", me.create_time(), title_mark=me.cmdline()[0])


def test_cpu_ceiling_bounds_the_end_to_end_ratios() -> None:
    report = {"machine_cpu_count": 2, "cpu_with_servers_us_per_tick": 40.0, "copy2_ticks_s": 250_000,
              "rowbyrow_ticks_s": 10_000, "e2e_ticks_s": 45_000}
    out = cpu_ceiling(report)
    assert out == {"e2e_cpu_ceiling_ticks_s": 50_000, "cpu_ceiling_vs_copy2": 0.2, "cpu_ceiling_vs_rowbyrow": 5.0,
                   "e2e_vs_cpu_ceiling": 0.9}
    assert set(cpu_ceiling({"machine_cpu_count": 2}).values()) == {None}  # server CPU not measured
