"""Restore a backup made by :func:`.backup.backup` and prove it came back whole.

Order of checks: the file's SHA-256 against its ``.sha256`` file; pg_restore new enough for the
archive; the target database empty (no user table holding rows, and no tables at all unless
``force``); then ``pg_restore --no-owner --exit-on-error``; then the row count of every data table
against the sidecar written at dump time.  Any mismatch raises :class:`.backup.BackupError`.

TimescaleDB dumps are restored the way its documentation prescribes: the same extension version
created first, ``timescaledb_pre_restore()`` before and ``timescaledb_post_restore()`` after
(always, even when pg_restore fails, so the database is not left in restoring mode).
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..settings import mask_url
from .backup import (
    BackupError,
    check_compatible,
    connect,
    file_sha256,
    find_tool,
    libpq_target,
    list_archive,
    sha256_path,
    sidecar_path,
    tool_version,
)

_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
Progress = Callable[[str], None]

# User tables, not partitions (their parent is counted) and not TimescaleDB's own catalogs.
_USER_TABLES = r"""
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE '\_timescaledb%'
  AND n.nspname NOT LIKE 'timescaledb\_%'
ORDER BY 1
"""


def read_sidecar(dump: Path) -> dict[str, Any]:
    """The JSON sidecar of ``dump``; BackupError when missing or not one of ours."""
    path = sidecar_path(dump)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{path.name} is missing: cannot verify row counts after the restore") from None
    except json.JSONDecodeError as exc:
        raise BackupError(f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("row_counts"), dict):
        raise BackupError(f"{path.name} has no row_counts: not a ttquant backup sidecar")
    return meta


def verify_checksum(dump: Path) -> str:
    """Check ``dump`` against its ``.sha256`` file; returns the digest, BackupError on mismatch."""
    path = sha256_path(dump)
    try:
        expected = path.read_text().split()[0].lower()
    except FileNotFoundError:
        raise BackupError(f"{path.name} is missing: cannot verify {dump.name}") from None
    except IndexError:
        raise BackupError(f"{path.name} is empty") from None
    actual = file_sha256(dump)
    if actual != expected:
        raise BackupError(f"{dump.name} is corrupt: SHA-256 {actual} but {path.name} says {expected}")
    return actual


def check_target(restore_version: int, server_version: int) -> None:
    """Raise when pg_restore ``restore_version`` cannot load into a server of ``server_version``.

    pg_restore >= 17 always sends ``SET transaction_timeout``, which servers before 17 reject, and
    an older pg_restore cannot read a newer archive: so an archive written by pg_dump >= 17 (the
    embedded 18 included) can only go into PostgreSQL >= 17.
    """
    if restore_version >= 17 > server_version:
        raise BackupError(
            f"pg_restore {restore_version} cannot restore into PostgreSQL {server_version} (it sets "
            "transaction_timeout, unknown before 17): restore into a server >= 17, or make the backup "
            f"with the pg_dump of PostgreSQL {server_version}"
        )


def _user_tables(cur: Any) -> dict[str, bool]:
    """Qualified name -> holds at least one row."""
    cur.execute(_USER_TABLES)
    names = [str(r[0]) for r in cur.fetchall()]
    result = {}
    for name in names:
        cur.execute(f"SELECT EXISTS (SELECT 1 FROM {name})")  # name quoted by format(%I) above
        result[name] = bool(cur.fetchone()[0])
    return result


def _prepare_timescale(cur: Any, version: str) -> None:
    cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = cur.fetchone()
    if row is not None and row[0] != version:
        raise BackupError(f"the dump needs TimescaleDB {version}, the target has {row[0]} installed")
    if row is None:
        cur.execute("SELECT 1 FROM pg_available_extension_versions WHERE name = 'timescaledb' AND version = %s",
                    (version,))
        if cur.fetchone() is None:
            raise BackupError(f"the dump needs TimescaleDB {version}, which the target server does not offer")
        cur.execute("CREATE EXTENSION timescaledb VERSION %s", (version,))
    cur.execute("SELECT timescaledb_pre_restore()")


def _run_pg_restore(argv: list[str], env: dict[str, str], total: int, progress: Progress | None) -> None:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    tail: collections.deque[str] = collections.deque(maxlen=20)
    done = 0
    assert proc.stderr is not None
    for raw in proc.stderr:
        line = raw.rstrip()
        tail.append(line)
        # --verbose prints one "creating …" / "processing data for table …" line per archive item.
        if progress is not None and line.startswith("pg_restore: ") and "error" not in line:
            msg = line.removeprefix("pg_restore: ")
            if msg.startswith(("creating ", "processing data", "executing ")):
                done += 1
            progress(f"[{min(done, total)}/{total}] {msg}")
    code = proc.wait()
    if code != 0:
        raise BackupError(f"pg_restore failed (exit {code}):\n" + "\n".join(tail))


def restore(file: Path, into_uri: str, force: bool = False, progress: Progress | None = None,
            *, pg_bin: Path | None = None) -> dict[str, Any]:
    """Restore backup ``file`` into the database ``into_uri`` and verify its row counts.

    Refuses a target holding rows, or holding tables at all, unless ``force`` (then
    ``pg_restore --clean --if-exists`` replaces the dump's objects; others are left alone).
    ``progress`` receives one human-readable line per restored item.  ``pg_bin``: the binaries
    to use (e.g. the embedded server's); None: pg_restore on PATH.  Returns ``{"file", "into",
    "seconds", "items", "row_counts", "timescaledb"}``; raises :class:`BackupError` on a bad
    checksum, a non-empty target, a pg_restore failure or any row-count mismatch.
    """
    file = Path(file)
    if not file.is_file():
        raise ConfigError("FILE", f"backup file {file} not found")
    started = time.monotonic()
    meta = read_sidecar(file)
    verify_checksum(file)
    pg_restore = find_tool("pg_restore", pg_bin)
    restore_version = tool_version(pg_restore)
    check_compatible("pg_restore", restore_version, int(meta.get("pg_dump_version", 0)))
    items = list_archive(pg_restore, file)
    tsdb = meta.get("timescaledb")
    dsn, env = libpq_target(into_uri)
    conn = connect(into_uri, "ttquant-restore")
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SELECT current_setting('server_version_num')::int / 10000")
        check_target(restore_version, int(cur.fetchone()[0]))
        tables = _user_tables(cur)
        with_rows = [t for t, has_rows in tables.items() if has_rows]
        if with_rows and not force:
            raise BackupError(f"{mask_url(into_uri)} is not empty ({len(with_rows)} tables hold rows, e.g. "
                              f"{', '.join(with_rows[:3])}): restore into an empty database, or force")
        if tables and not force:
            raise BackupError(f"{mask_url(into_uri)} already has {len(tables)} tables (no rows): restore "
                              "needs an empty database (CREATE DATABASE …), or force to replace them")
        argv = [str(pg_restore), "--no-owner", "--exit-on-error", "--verbose", f"--dbname={dsn}"]
        if tables:
            argv += ["--clean", "--if-exists"]
        if tsdb:
            _prepare_timescale(cur, str(tsdb))
        try:
            _run_pg_restore([*argv, str(file)], env, len(items), progress)
        finally:
            if tsdb:
                cur.execute("SELECT timescaledb_post_restore()")
        counts = _verify_counts(cur, {str(k): int(v) for k, v in meta["row_counts"].items()})
    finally:
        conn.close()
    return {"file": str(file), "into": mask_url(into_uri), "seconds": round(time.monotonic() - started, 3),
            "items": len(items), "row_counts": counts, "timescaledb": tsdb}


def _verify_counts(cur: Any, expected: dict[str, int]) -> dict[str, int]:
    actual: dict[str, int] = {}
    for name in expected:
        if not _PLAIN_NAME.match(name):
            raise BackupError(f"sidecar names a table {name!r} that is not a plain table name")
        cur.execute("SELECT to_regclass(%s)", (name,))
        if cur.fetchone()[0] is None:
            actual[name] = -1
            continue
        cur.execute(f'SELECT count(*) FROM "{name}"')  # names from our own sidecar, checked by to_regclass
        actual[name] = int(cur.fetchone()[0])
    wrong = {n: (expected[n], actual[n]) for n in expected if actual[n] != expected[n]}
    if wrong:
        detail = ", ".join(f"{n}: dump {e} restored {'missing' if a < 0 else a}" for n, (e, a) in wrong.items())
        raise BackupError(f"row counts differ after the restore: {detail}")
    return actual
