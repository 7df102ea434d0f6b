"""Pure parts of the bench report: the hot-path floor rows and ratio, server CPU per tick."""

from __future__ import annotations

from typing import Any

from ttquant_tasks.bench.hotpath import combine_rounds, with_ratios
from ttquant_tasks.bench.report import TARGETS, check_flat, markdown
from ttquant_tasks.bench.runner import cpu_ceiling
from ttquant_tasks.bench.servercpu import ServerCpu


def test_floor_ratios_are_like_for_like_and_absent_without_a_floor() -> None:
    report = {"hot_healthy_p99_us": 60.0, "hot_floor_nosub_p99_us": 20.0, "hot_healthy_floor_p99_us": 30.0,
              "hot_healthy_pbfloor_p99_us": 50.0}
    got = with_ratios(report)
    assert got["hot_p99_vs_floor"] == 2.0  # vs the floor interleaved with healthy, not the idle one
    assert got["hot_p99_vs_pbfloor"] == 1.2
    assert "hot_p99_vs_floor" not in with_ratios({"hot_healthy_p99_us": 60.0, "hot_floor_nosub_p99_us": 20.0})
    assert with_ratios({"hot_healthy_p99_us": 60.0, "hot_healthy_floor_p99_us": None})["hot_p99_vs_floor"] is None


def test_outage_ratio_over_own_floor_cancels_a_machine_that_slowed_down() -> None:
    # The machine got 1.5x slower between the runs: feed and floor both moved; the adjusted ratio is 1.
    report = {"hot_healthy_p99_us": 40.0, "hot_healthy_floor_p99_us": 10.0,
              "hot_db_down_p99_us": 60.0, "hot_db_down_floor_p99_us": 15.0, "hot_broker_hung_p99_us": 44.0}
    got = with_ratios(report)
    assert got["hot_db_down_p99_vs_healthy"] == 1.5
    assert got["hot_db_down_p99_vs_healthy_floor_adj"] == 1.0
    assert got["hot_broker_hung_p99_vs_healthy"] == 1.1
    assert "hot_broker_hung_p99_vs_healthy_floor_adj" not in got  # no floor of its own: no adjusted ratio


def test_control_ratio_is_the_encode_and_send_floor_between_conditions() -> None:
    report = {"hot_healthy_p99_us": 50.0, "hot_healthy_pbfloor_p99_us": 40.0,
              "hot_broker_hung_p99_us": 65.0, "hot_broker_hung_pbfloor_p99_us": 52.0}
    got = with_ratios(report)
    assert got["hot_broker_hung_p99_vs_healthy"] == 1.3
    assert got["hot_broker_hung_pbfloor_p99_vs_healthy"] == 1.3  # the untouched code moved as much
    assert "hot_db_down_pbfloor_p99_vs_healthy" not in got


def test_floor_rows_follow_the_hot_path_target_and_are_never_verdicts() -> None:
    refs_expected = ["hot_healthy_floor_p99_us", "hot_healthy_pbfloor_p99_us", "hot_p99_vs_floor", "hot_p99_vs_pbfloor",
                     "hot_healthy_cold_share", "hot_healthy_cold_p50_us", "hot_healthy_floor_cold_p50_us",
                     "hot_healthy_pbfloor_cold_p50_us", "hot_floor_nosub_p99_us", "hot_floor_p99_us",
                     "hot_floor_noop_p99_us"]
    report = {"hot_healthy_p99_us": 60.0, **{k: 1.0 for k in refs_expected},
              "hot_db_down_p99_vs_healthy": 1.1, "hot_db_down_p99_vs_healthy_floor_adj": 0.9}
    lines = markdown(report, ()).splitlines()
    at = next(i for i, line in enumerate(lines) if "`hot_healthy_p99_us`" in line)
    refs = lines[at + 1:at + 1 + len(refs_expected)]
    assert [r.split("`")[1] for r in refs] == refs_expected
    assert all(r.endswith("| reference |") for r in refs)
    at = next(i for i, line in enumerate(lines) if "`hot_db_down_p99_vs_healthy`" in line)
    assert "`hot_db_down_p99_vs_healthy_floor_adj`" in lines[at + 1] and lines[at + 1].endswith("| reference |")
    assert len(lines) == 2 + len(TARGETS) + len(refs_expected) + 1
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
    assert servercpu._not_local(os.getpid(), name, me.create_time()) is None
    why = servercpu._not_local(os.getpid(), name, me.create_time() - 60)  # another process's start
    assert why is not None and "started +60.0 s from the server's time" in why
    assert servercpu._not_local(os.getpid(), name, me.create_time() - 60, title_mark=me.cmdline()[0]) is None  # skew
    why = servercpu._not_local(os.getpid(), "no-such-server", me.create_time(), title_mark=me.cmdline()[0])
    assert why is not None and "is not no-such-server" in why
    assert "NoSuchProcess" in str(servercpu._not_local(2**22 + 7, name, 0.0))  # above pid_max: never a process


def test_cpu_ceiling_bounds_the_end_to_end_ratios() -> None:
    report = {"machine_cpu_count": 2, "cpu_with_servers_us_per_tick": 40.0, "copy2_ticks_s": 250_000,
              "rowbyrow_ticks_s": 10_000, "e2e_ticks_s": 45_000}
    out = cpu_ceiling(report)
    assert out == {"e2e_cpu_ceiling_ticks_s": 50_000, "cpu_ceiling_vs_copy2": 0.2, "cpu_ceiling_vs_rowbyrow": 5.0,
                   "e2e_vs_cpu_ceiling": 0.9}
    assert set(cpu_ceiling({"machine_cpu_count": 2}).values()) == {None}  # server CPU not measured


def test_rounds_of_a_condition_combine_to_medians_sums_and_maxima() -> None:
    rounds: list[dict[str, Any]] = [
        {"hot_db_down_p99_us": 70.0, "hot_db_down_max_us": 900.0, "hot_db_down_ticks": 100, "hot_db_down_sent": 1000,
         "hot_db_down_cold_share": 0.03, "hot_db_down_settle_s": 4.0},
        {"hot_db_down_p99_us": 50.0, "hot_db_down_max_us": 300.0, "hot_db_down_ticks": 110, "hot_db_down_sent": 1001,
         "hot_db_down_cold_share": 0.05, "hot_db_down_settle_s": None},
        {"hot_db_down_p99_us": 60.0, "hot_db_down_max_us": 400.0, "hot_db_down_ticks": 90, "hot_db_down_sent": 999,
         "hot_db_down_cold_share": 0.04, "hot_db_down_settle_s": 6.0},
    ]
    out = combine_rounds("db_down", rounds)
    assert out["hot_db_down_p99_us"] == 60.0  # the median, not the mean of one slow round
    assert out["hot_db_down_max_us"] == 900.0
    assert out["hot_db_down_ticks"] == 300 and out["hot_db_down_sent"] == 3000
    assert out["hot_db_down_cold_share"] == 0.04
    assert out["hot_db_down_settle_s"] is None  # a round that never settled is not hidden by the others
    assert out["hot_db_down_rounds"] == 3 and out["hot_db_down_p99_rounds"] == "70.0 50.0 60.0"
    assert check_flat(out) == []
