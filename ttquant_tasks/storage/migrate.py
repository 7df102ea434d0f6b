"""Apply the ordered SQL files of ``sql/`` to a database: create it or upgrade it in place.

Files are named ``NNN_name.sql`` (every flavour) or ``NNN_name.<flavour>.sql`` (one flavour:
``plain`` or ``timescale``); each version number has either one common file or one file per
flavour.  Each version runs in its own transaction together with its ``schema_version`` row, so a
failed file leaves the database at the previous version; nothing here ever drops data.  A session
advisory lock serializes concurrent callers (worker and beat starting together): the second one
waits, then finds nothing left to do.  ``init_db`` is ``upgrade_db`` from an empty database, and
running either twice changes nothing.

The flavour is chosen when version 1 is applied and recorded in ``ttquant_meta``:
``auto`` takes ``timescale`` when the TimescaleDB extension is installable here (available and
preloaded), else ``plain`` (daily RANGE partitions).  Plain: a DEFAULT partition catches rows of
days without a partition, and ``ttquant_ensure_day`` (called by the writer for each day of a chunk,
backfill included) creates the day's partition and moves such rows into it (see ``sql/002``, ``003``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg2
import sqlalchemy as sa

from ..errors import ConfigError, PermanentError
from .engine import db_errors, make_engine

FLAVOURS = ("plain", "timescale")
REQUESTS = ("auto", *FLAVOURS)
DEFAULT_DAYS_AHEAD = 3
# Any constant works; it only has to be the same for every ttquant-tasks process.
_LOCK_KEY = 0x7474_7175_616E  # "ttquan"
_FILE = re.compile(r"^(?P<version>\d{3,})_(?P<name>[a-z0-9_]+)(?:\.(?P<flavour>[a-z]+))?\.sql$")


def _default_sql_dir() -> Path:
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "sql", here.parent / "sql"):  # source tree, packaged copy
        if candidate.is_dir():
            return candidate
    return here.parents[2] / "sql"


SQL_DIR = _default_sql_dir()


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: ``version`` orders it, ``name`` is recorded, ``flavour`` None means all."""

    version: int
    name: str
    path: Path
    flavour: str | None

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def parse_filename(path: Path) -> Migration:
    """The :class:`Migration` a file name describes; :class:`ConfigError` for a malformed name."""
    m = _FILE.match(path.name)
    if m is None:
        raise ConfigError("sql", f"{path.name}: expected NNN_name.sql or NNN_name.<flavour>.sql")
    flavour = m["flavour"]
    if flavour is not None and flavour not in FLAVOURS:
        raise ConfigError("sql", f"{path.name}: unknown flavour {flavour!r} (expected one of {FLAVOURS})")
    return Migration(int(m["version"]), f'{m["version"]}_{m["name"]}', path, flavour)


def select(files: Iterable[Migration], flavour: str) -> list[Migration]:
    """One migration per version for ``flavour``, in version order.

    Versions must run 1..N without gaps; a version has either one common file or a file for each
    flavour (never both, never only some): a mistake there would silently fork the schemas.
    """
    by_version: dict[int, list[Migration]] = {}
    for f in files:
        by_version.setdefault(f.version, []).append(f)
    if sorted(by_version) != list(range(1, len(by_version) + 1)):
        raise ConfigError("sql", f"versions must be 1..N without gaps, found {sorted(by_version)}")
    chosen = []
    for version in sorted(by_version):
        group = by_version[version]
        kinds = sorted(f.flavour or "" for f in group)
        if kinds != [""] and kinds != sorted(FLAVOURS):
            names = ", ".join(sorted(f.path.name for f in group))
            raise ConfigError("sql", f"version {version} needs one common file or one per flavour: {names}")
        if len({f.name for f in group}) != 1:
            raise ConfigError("sql", f"version {version} files disagree on the name: {[f.name for f in group]}")
        chosen.append(next(f for f in group if f.flavour in (None, flavour)))
    return chosen


def discover(flavour: str, sql_dir: Path | None = None) -> list[Migration]:
    """The migrations of ``sql_dir`` (default: the repository's ``sql/``) for ``flavour``."""
    directory = sql_dir or SQL_DIR
    if not directory.is_dir():
        raise ConfigError("sql", f"schema directory {directory} not found")
    return select((parse_filename(p) for p in sorted(directory.glob("*.sql"))), flavour)


def pending(migrations: Sequence[Migration], applied: Mapping[int, str], target: int | None = None) -> list[Migration]:
    """The migrations still to apply, in order, up to ``target`` (default: the newest).

    Refuses a database that is newer than this code or whose recorded names differ from the files
    (a renumbered file would otherwise be skipped or applied twice).
    """
    known = {m.version: m for m in migrations}
    newest = max(known, default=0)
    if target is not None and not 0 <= target <= newest:
        raise ConfigError("target", f"schema version {target} does not exist (newest is {newest})")
    for version, name in applied.items():
        if version not in known:
            raise PermanentError(f"database is at schema version {version}, newer than this code ({newest})")
        if known[version].name != name:
            raise PermanentError(
                f"schema version {version} was applied as {name!r} but the file is {known[version].name!r}"
            )
    limit = newest if target is None else target
    return [m for m in migrations if m.version not in applied and m.version <= limit]


def resolve_flavour(requested: str, recorded: str | None, timescale_available: Callable[[], bool]) -> str:
    """The flavour to use: the recorded one for an existing database, else what was asked for."""
    if requested not in REQUESTS:
        raise ConfigError("flavour", f"expected one of {REQUESTS}, got {requested!r}")
    if recorded is not None:
        if requested not in ("auto", recorded):
            raise ConfigError("flavour", f"database was created as {recorded!r}, cannot switch to {requested!r}")
        return recorded
    if requested == "plain":
        return "plain"
    available = timescale_available()
    if requested == "timescale" and not available:
        raise ConfigError("flavour", "timescale requested but the timescaledb extension is not installable here")
    return "timescale" if available else "plain"


# --- database side ---------------------------------------------------------------------------


def flavour(bind: sa.Connection | sa.Engine) -> str | None:
    """The flavour recorded in the database (``plain``/``timescale``), None before ``init_db``."""
    if isinstance(bind, sa.Engine):
        with db_errors("flavour"), bind.connect() as conn:
            return flavour(conn)
    if bind.execute(sa.text("SELECT to_regclass('ttquant_meta')")).scalar() is None:
        return None
    value = bind.execute(sa.text("SELECT value FROM ttquant_meta WHERE key = 'flavour'")).scalar()
    return None if value is None else str(value)


def timescale_installable(uri: str | None) -> bool:
    """True when ``init_db(uri, "auto")`` would choose the TimescaleDB flavour for a new database."""
    engine = make_engine(uri)
    try:
        with db_errors("timescale_installable"):
            raw = engine.raw_connection()
            try:
                cur = raw.cursor()
                available = _timescale_available(cur)
                cur.close()
                return available
            finally:
                raw.close()
    finally:
        engine.dispose()


def _applied(cur: Any) -> dict[int, str]:
    cur.execute("SELECT to_regclass('schema_version')")
    if cur.fetchone()[0] is None:
        return {}
    cur.execute("SELECT version, name FROM schema_version ORDER BY version")
    return {int(v): str(n) for v, n in cur.fetchall()}


def _recorded_flavour(cur: Any) -> str | None:
    cur.execute("SELECT to_regclass('ttquant_meta')")
    if cur.fetchone()[0] is None:
        return None
    cur.execute("SELECT value FROM ttquant_meta WHERE key = 'flavour'")
    row = cur.fetchone()
    return None if row is None else str(row[0])


def _timescale_available(cur: Any) -> bool:
    # Listed in pg_available_extensions is not enough: CREATE EXTENSION fails unless the
    # library is preloaded (or already installed in this database).
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
        " AND (current_setting('shared_preload_libraries') ~ 'timescaledb'"
        "      OR EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'))"
    )
    return bool(cur.fetchone()[0])


def _ensure_partitions(cur: Any, days_ahead: int) -> int:
    cur.execute("SELECT to_regprocedure('ttquant_ensure_partitions(integer)')")
    if cur.fetchone()[0] is None:
        return 0
    cur.execute("SELECT ttquant_ensure_partitions(%s)", (days_ahead,))
    return int(cur.fetchone()[0])


def upgrade_db(uri: str | None, target: int | None = None, *, flavour: str = "auto",
               days_ahead: int = DEFAULT_DAYS_AHEAD, sql_dir: Path | None = None) -> dict[str, Any]:
    """Apply the missing schema versions (up to ``target``) in order; idempotent.

    ``flavour`` only matters for an empty database (see :func:`resolve_flavour`).  Afterwards
    ``ttquant_ensure_partitions(days_ahead)`` runs when the schema has it.  Returns
    ``{"flavour", "version", "applied": [versions applied now], "partitions_created"}``.
    Raises :class:`DatabaseUnavailable` when the database cannot be reached.
    """
    engine = make_engine(uri)
    try:
        with db_errors("migrate"):
            raw = engine.raw_connection()
        try:
            with db_errors("migrate"):
                return _upgrade(raw.driver_connection, target, flavour, days_ahead, sql_dir)
        finally:
            raw.close()
    finally:
        engine.dispose()


def init_db(uri: str | None, flavour: str = "auto", *, target: int | None = None,
            days_ahead: int = DEFAULT_DAYS_AHEAD, sql_dir: Path | None = None) -> dict[str, Any]:
    """Create (or complete) the schema; the same as :func:`upgrade_db` from an empty database.

    ``flavour``: ``auto`` (TimescaleDB when installable, else plain), ``plain`` or ``timescale``
    (fails when not installable).  Asking for another flavour than the recorded one fails.
    """
    return upgrade_db(uri, target, flavour=flavour, days_ahead=days_ahead, sql_dir=sql_dir)


def _upgrade(raw: Any, target: int | None, requested: str, days_ahead: int,
             sql_dir: Path | None) -> dict[str, Any]:
    cur = raw.cursor()
    raw.autocommit = True
    cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        raw.autocommit = False
        applied = _applied(cur)
        chosen = resolve_flavour(requested, _recorded_flavour(cur), lambda: _timescale_available(cur))
        todo = pending(discover(chosen, sql_dir), applied, target)
        raw.commit()
        for m in todo:
            try:
                cur.execute(m.sql())  # no parameters: psycopg2 sends the file as is (% stays %)
                if m.version == 1:
                    cur.execute("INSERT INTO ttquant_meta (key, value) VALUES ('flavour', %s)", (chosen,))
                cur.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)", (m.version, m.name))
                raw.commit()
            except Exception as exc:
                raw.rollback()
                if _is_sql_error(exc):
                    raise PermanentError(f"migration {m.path.name} failed: {str(exc).strip()}") from exc
                raise
        created = _ensure_partitions(cur, days_ahead)
        raw.commit()
        version = max(_applied(cur), default=0)
        raw.commit()
        return {"flavour": chosen, "version": version, "applied": [m.version for m in todo],
                "partitions_created": created}
    finally:
        try:
            raw.rollback()
            raw.autocommit = True
            cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
            cur.close()
        except psycopg2.Error:  # connection gone: the session lock went with it
            pass


def _is_sql_error(exc: BaseException) -> bool:
    return isinstance(exc, psycopg2.Error) and not isinstance(
        exc, psycopg2.OperationalError | psycopg2.InterfaceError
    )
