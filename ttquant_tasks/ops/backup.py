"""Backups: ``pg_dump -Fc`` to a directory, a checksum and a row-count sidecar beside each, keep N.

A backup ``ttquant-20250101T030000Z.dump`` (UTC, when it started) comes with

* ``….dump.sha256`` -- ``sha256sum`` format, so ``sha256sum -c`` checks it by hand too;
* ``….dump.json``   -- the row count of each data table *in the dump*, the server and pg_dump
  versions and the TimescaleDB version (restore needs the same one), for :mod:`.restore`.

The counts are exact for the dump: they are taken in a REPEATABLE READ transaction whose snapshot
pg_dump is given (``--snapshot``), so writes going on during the backup cannot make them differ.
The dump is written under a temporary name, checked with ``pg_restore --list`` and only then
renamed, so a ``*.dump`` file is always complete.  Idempotent in the sense that matters: a failed
run leaves nothing but what was there before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url

from ..errors import ConfigError, DatabaseUnavailable, PermanentError
from ..files import fsync_path
from ..settings import mask_url
from ..storage import schema
from ..storage.engine import sqlalchemy_url

PREFIX = "ttquant-"
SUFFIX = ".dump"
SIDECAR_FORMAT = 1
_NAME = re.compile(r"^ttquant-(\d{8}T\d{6}Z)\.dump$")
_STAMP = "%Y%m%dT%H%M%SZ"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_TOOL_TIMEOUT_S = 6 * 3600  # a generous ceiling for pg_dump / pg_restore on months of ticks


class BackupError(PermanentError):
    """A backup or restore could not be made or failed its verification; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class BackupResult:
    """A verified backup: ``size`` in bytes, ``seconds`` wall time, ``row_counts`` per data table."""

    path: Path
    size: int
    sha256: str
    seconds: float
    row_counts: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "sha256": self.sha256,
                "seconds": round(self.seconds, 3), "row_counts": dict(self.row_counts)}


# --------------------------------------------------------------------------- pure helpers


def backup_name(at: datetime) -> str:
    """File name of a backup started at ``at`` (aware; rendered in UTC)."""
    if at.tzinfo is None:
        raise ConfigError("at", "backup time must be timezone-aware (UTC)")
    return f"{PREFIX}{at.astimezone(UTC).strftime(_STAMP)}{SUFFIX}"


def backup_time(path: Path) -> datetime | None:
    """UTC start time encoded in a backup file name, None for other names."""
    m = _NAME.match(path.name)
    return None if m is None else datetime.strptime(m.group(1), _STAMP).replace(tzinfo=UTC)


def sha256_path(dump: Path) -> Path:
    return dump.with_name(dump.name + ".sha256")


def sidecar_path(dump: Path) -> Path:
    return dump.with_name(dump.name + ".json")


def tool_major(version_output: str) -> int:
    """Major version from ``pg_dump --version`` output, e.g. ``pg_dump (PostgreSQL) 15.20 (Debian…)``."""
    m = _VERSION.search(version_output)
    if m is None:
        raise BackupError(f"cannot read a PostgreSQL version from {version_output.strip()!r}")
    return int(m.group(1))


def check_compatible(tool: str, tool_version: int, server_version: int) -> None:
    """Raise when ``tool`` (major ``tool_version``) cannot handle a server of major ``server_version``.

    pg_dump refuses a newer server; use the same or a newer major (the embedded binaries are 18).
    """
    if tool_version < server_version:
        raise BackupError(
            f"{tool} {tool_version} cannot handle a PostgreSQL {server_version} server: use a {tool} of "
            f"version >= {server_version} (for the embedded server its own binaries, or install "
            f"postgresql-client-{server_version})"
        )


def libpq_target(uri: str) -> tuple[str, dict[str, str]]:
    """``(dsn, env)`` for a libpq tool: the URI without driver suffix or password, and PGPASSWORD.

    The password goes through the environment so it never shows in ``ps``.
    """
    url = make_url(sqlalchemy_url(uri))
    env = {"PGPASSWORD": url.password} if url.password else {}
    dsn = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return dsn, env


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups (by the time in their names), with their
    checksum and sidecar files; returns the dumps removed.  Files with other names are left alone."""
    if keep < 1:
        raise ConfigError("keep", f"must keep at least 1 backup, got {keep}")
    dumps = sorted((p for p in directory.glob(f"{PREFIX}*{SUFFIX}") if backup_time(p)), key=lambda p: p.name)
    removed = dumps[:-keep]
    for dump in removed:
        for p in (dump, sha256_path(dump), sidecar_path(dump)):
            p.unlink(missing_ok=True)
    return removed


def latest_backup(directory: Path, now: datetime | None = None) -> tuple[Path, float] | None:
    """Newest complete backup in ``directory`` (one with its checksum file) and its age in seconds
    (from the UTC time in its name), or None when there is none."""
    if not directory.is_dir():
        return None
    done = [p for p in directory.glob(f"{PREFIX}*{SUFFIX}") if backup_time(p) and sha256_path(p).exists()]
    if not done:
        return None
    newest = max(done, key=lambda p: p.name)
    started = backup_time(newest)
    assert started is not None
    return newest, ((now or datetime.now(UTC)) - started).total_seconds()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- binaries


def find_tool(name: str, pg_bin: Path | None) -> Path:
    """``pg_bin/name`` when ``pg_bin`` is given (the embedded server's), else ``name`` on PATH."""
    if pg_bin is not None:
        path = Path(pg_bin) / name
        if not path.exists():
            raise ConfigError("pg_bin", f"{name} not found in {pg_bin}")
        return path
    found = shutil.which(name)
    if found is None:
        raise ConfigError("PATH", f"{name} not found: install the PostgreSQL client tools")
    return Path(found)


def tool_version(tool: Path) -> int:
    out = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=30, check=False)
    return tool_major(out.stdout or out.stderr)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    fsync_path(tmp)
    os.replace(tmp, path)


def list_archive(pg_restore: Path, dump: Path) -> list[str]:
    """The table of contents of ``dump`` (``pg_restore --list``); raises BackupError when unreadable."""
    out = subprocess.run([str(pg_restore), "--list", str(dump)], capture_output=True, text=True,
                         timeout=600, check=False)
    if out.returncode != 0:
        raise BackupError(f"{dump.name} is not a readable archive: {out.stderr.strip()[-500:]}")
    return [line for line in out.stdout.splitlines() if line and not line.startswith(";")]


# --------------------------------------------------------------------------- database side


def connect(uri: str, application_name: str) -> Any:
    """A plain psycopg2 connection to ``uri``; DatabaseUnavailable when it cannot be reached."""
    dsn, env = libpq_target(uri)
    try:
        return psycopg2.connect(dsn, connect_timeout=10, application_name=application_name,
                                **({"password": env["PGPASSWORD"]} if env else {}))
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to {mask_url(uri)}: {str(exc).strip()}") from exc


def _snapshot_facts(cur: Any) -> dict[str, Any]:
    """Server version, flavour, TimescaleDB version and exact row counts, in the current snapshot."""
    cur.execute("SELECT current_setting('server_version_num')::int, current_database()")
    version_num, database = cur.fetchone()
    cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = cur.fetchone()
    counts: dict[str, int] = {}
    for name in schema.TABLES:
        cur.execute("SELECT to_regclass(%s)", (name,))
        if cur.fetchone()[0] is None:
            continue
        cur.execute(f'SELECT count(*) FROM "{name}"')  # names from our own schema list
        counts[name] = int(cur.fetchone()[0])
    return {"server_version": int(version_num) // 10000, "database": database,
            "timescaledb": None if row is None else str(row[0]), "row_counts": counts}


def backup(db_uri: str, directory: Path, keep: int = 7, pg_bin: Path | None = None) -> BackupResult:
    """Dump ``db_uri`` to ``directory`` (created if missing), verify it, keep the newest ``keep``.

    ``pg_bin``: directory of the PostgreSQL binaries to use (the embedded server's); None: pg_dump
    on PATH.  Raises :class:`BackupError` when pg_dump is too old for the server, pg_dump fails, or
    the archive does not list (the partial file is removed), and
    :class:`~ttquant_tasks.errors.ConfigError` for a bad argument or a missing binary.
    """
    if keep < 1:
        raise ConfigError("keep", f"must keep at least 1 backup, got {keep}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pg_dump, pg_restore = find_tool("pg_dump", pg_bin), find_tool("pg_restore", pg_bin)
    dump_version = tool_version(pg_dump)
    started = time.monotonic()
    now = datetime.now(UTC)
    final = directory / backup_name(now)
    if final.exists():
        raise BackupError(f"{final} already exists (two backups in the same second?)")
    partial = directory / f".{final.name}.partial"
    dsn, env = libpq_target(db_uri)
    conn = connect(db_uri, "ttquant-backup")
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        cur = conn.cursor()
        cur.execute("SELECT pg_export_snapshot()")
        snapshot = cur.fetchone()[0]
        facts = _snapshot_facts(cur)
        check_compatible("pg_dump", dump_version, facts["server_version"])
        # The transaction stays open until pg_dump has its snapshot, so the counts above are
        # exactly what the archive holds.
        proc = subprocess.run(
            [str(pg_dump), "--format=custom", f"--snapshot={snapshot}", f"--file={partial}", f"--dbname={dsn}"],
            capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, env={**os.environ, **env}, check=False,
        )
        if proc.returncode != 0:
            raise BackupError(f"pg_dump failed (exit {proc.returncode}): {proc.stderr.strip()[-1000:]}")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        conn.close()
    try:
        fsync_path(partial)
        list_archive(pg_restore, partial)
        digest = file_sha256(partial)
        size = partial.stat().st_size
        sidecar = {"format": SIDECAR_FORMAT, "file": final.name, "created_at": now.isoformat(),
                   "sha256": digest, "size": size, "pg_dump_version": dump_version, **facts}
        _write_atomic(sidecar_path(final), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        _write_atomic(sha256_path(final), f"{digest}  {final.name}\n")
        os.replace(partial, final)
    except BaseException:
        for p in (partial, sidecar_path(final), sha256_path(final)):
            p.unlink(missing_ok=True)
        raise
    prune(directory, keep)
    return BackupResult(final, size, digest, time.monotonic() - started, facts["row_counts"])
