"""CPU of the servers behind a bench phase: PostgreSQL processes and redis-server, from
``/proc/<pid>/stat`` (utime + stime, via psutil) before and after, per persisted tick.

Only when the server is a process of this machine: the pid the server reports (our own backend's
``pg_backend_pid()``, Redis's ``INFO server`` ``process_id``) must exist here with the right name and
either the same start time (± 2 s) as the server says or, for PostgreSQL, our connection's client
port in its process title (``postgres: ... 127.0.0.1(43050) ...``; a VM whose clock was stepped
since boot skews psutil's start times by more than 2 s), so a server in a container or on another
host (its pids mean nothing here) gives ``None`` instead of some unrelated process's CPU.

What is counted:

* ``pg``: the client backends of the bench's own database (the worker's connections) alive at the
  end of the phase -- the CPU they used during it (all of it for those that started during it);
  backends that ended during the phase are missed (the workers' pooled ones do not end);
* ``pg_aux``: the server's processes that belong to no other database (WAL writer, checkpointer,
  background writer, autovacuum launcher, TimescaleDB workers of the bench database...).  Shared
  with every database of the server, so an upper bound while other clients write;
* ``redis``: the whole redis-server process (shared with every db number on it: an upper bound).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg2

from .report import Figure

_START_SLACK_S = 2.0


def _cpu(pid: int) -> float | None:
    try:
        t = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError):
        return None
    return float(t.user + t.system)


def _not_local(pid: int, name_part: str, started_epoch: float, title_mark: str | None = None) -> str | None:
    """None when ``pid`` is a process here whose name/command line has ``name_part`` and that started
    when the server says it did, or whose command line has ``title_mark``; else why not."""
    try:
        p = psutil.Process(pid)
        text = p.name() + " " + " ".join(p.cmdline())
        if name_part not in text:
            return f"pid {pid} here is not {name_part}: {text[:80]!r}"
        skew = p.create_time() - started_epoch
        if (title_mark is not None and title_mark in text) or abs(skew) <= _START_SLACK_S:
            return None
        return f"pid {pid} started {skew:+.1f} s from the server's time and {title_mark!r} is not in {text[:80]!r}"
    except (psutil.Error, OSError) as exc:
        return f"pid {pid}: {type(exc).__name__}: {exc}"


class ServerCpu:
    """Finds the local server processes of ``db_uri`` and ``broker_url``; :meth:`snapshot` reads their CPU."""

    def __init__(self, db_uri: str, broker_url: str) -> None:
        self.db_uri = db_uri
        self.problems: list[str] = []  # why a figure is None (the bench reports them as server_cpu_note)
        self.pg_local = self._pg_is_local()
        self.redis_pid = self._local_redis_pid(broker_url)

    def _connect(self) -> Any:
        return psycopg2.connect(self.db_uri, connect_timeout=5, application_name="ttq-bench-cpu")

    def _pg_is_local(self) -> bool:
        try:
            with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
                cur.execute("SELECT pid, extract(epoch FROM backend_start), inet_client_port() FROM pg_stat_activity"
                            " WHERE pid = pg_backend_pid()")
                row = cur.fetchone()
        except psycopg2.Error as exc:
            self.problems.append(f"PostgreSQL: {str(exc).strip()[:120]}")
            return False
        if row is None:
            return False
        mark = f"({row[2]})" if row[2] is not None else None
        why = _not_local(int(row[0]), "postgres", float(row[1]), mark)
        if why is not None:
            self.problems.append(f"PostgreSQL not local: {why}")
        return why is None

    @staticmethod
    def _local_redis_pid(url: str) -> int | None:
        if not urlsplit(url).scheme.startswith("redis"):
            return None
        try:
            import redis

            info = redis.Redis.from_url(url, socket_timeout=5).info("server")
            pid = int(info["process_id"])
            started = time.time() - float(info["uptime_in_seconds"])
        except Exception:  # noqa: BLE001 - no figure rather than a failed phase
            return None
        return pid if _not_local(pid, "redis", started) is None else None

    def _pg_pids(self) -> dict[str, list[int]]:
        """pids of the bench database's client backends and of the shared server processes."""
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT pid, backend_type = 'client backend' FROM pg_stat_activity"
                        " WHERE pid <> pg_backend_pid() AND (datname = current_database() OR datname IS NULL)")
            rows = cur.fetchall()
        return {"pg": [int(p) for p, client in rows if client], "pg_aux": [int(p) for p, client in rows if not client]}

    def snapshot(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far per pid, by group (``pg``, ``pg_aux``, ``redis``); groups not local are absent."""
        out: dict[str, dict[int, float]] = {}
        if self.pg_local:
            try:
                for group, pids in self._pg_pids().items():
                    out[group] = {pid: c for pid in pids if (c := _cpu(pid)) is not None}
            except psycopg2.Error as exc:
                self.problems.append(f"PostgreSQL pids: {str(exc).strip()[:120]}")
        if self.redis_pid is not None:
            c = _cpu(self.redis_pid)
            if c is not None:
                out["redis"] = {self.redis_pid: c}
        return out

    @staticmethod
    def per_tick(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]],
                 ticks: int) -> dict[str, Figure]:
        """``<group>_cpu_us_per_tick`` (None when not measured) and their sum ``server_cpu_us_per_tick``."""
        out: dict[str, Figure] = {}
        total: float | None = 0.0
        for group in ("pg", "pg_aux", "redis"):
            if group not in before or group not in after or ticks <= 0:
                out[f"{group}_cpu_us_per_tick"] = None
                total = None
                continue
            # A pid that was not there before started during the phase: all its CPU counts.
            used = sum(max(0.0, cpu - before[group].get(pid, 0.0)) for pid, cpu in after[group].items())
            out[f"{group}_cpu_us_per_tick"] = round(used / ticks * 1e6, 2)
            if total is not None:
                total += used
        out["server_cpu_us_per_tick"] = None if total is None else round(total / max(1, ticks) * 1e6, 2)
        return out
