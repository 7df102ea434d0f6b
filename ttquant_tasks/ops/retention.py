"""Retention with an archive: old market data goes to Parquet first, and only then is it dropped.

Layout (Hive-style partitions, so DuckDB/Polars/pyarrow read it as one dataset)::

    ARCHIVE_DIR/market_data/exchange=binance/symbol=BTCUSDT/2025-01-31.parquet

One file per UTC day, exchange and symbol.  Prices and quantities are stored as the exact decimal
strings of the database (NUMERIC has no fixed scale, so no decimal128 precision fits every
market); ``time`` as UTC microseconds, ``exchange_time``/``local_time`` as int64 nanoseconds.

What is dropped is exactly what was archived and verified:

1. horizon = start of the UTC day of ``now() - older_than_days`` (the database's clock);
2. each (day, exchange, symbol) with rows before the horizon is exported to a temporary file, read
   back and counted, then renamed into place.  A file already there (an earlier run whose drop
   did not happen, or rows backfilled after an earlier drop) is merged by ``trade_id``, never
   overwritten with less;
3. under ``LOCK TABLE market_data IN SHARE MODE`` (writers wait for the few seconds it takes), the
   rows before the horizon are counted again per group; the horizon moves back to the first day that
   failed to archive or gained rows since its export; then ``ttquant_drop_partitions`` drops the day
   partitions (plain) or chunks (TimescaleDB, ``drop_chunks``) that end at or before that horizon.

Idempotent: a re-run re-exports nothing that is gone and re-merges what is still there.  The
TimescaleDB retention *policy* (sql/003) drops chunks without archiving: when the archive is in
use it must be removed (``remove_retention_policy('market_data')``).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..errors import ConfigError, PermanentError
from ..files import fsync_path
from ..storage.engine import db_errors

BATCH_ROWS = 50_000
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_COLUMNS = ("time", "symbol", "exchange", "last_price", "volume", "exchange_time", "local_time", "trade_id",
            "buyer_maker")

_GROUPS = sa.text("""
SELECT (time AT TIME ZONE 'UTC')::date AS day, exchange, symbol, count(*) AS n
FROM market_data WHERE time < :cutoff
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
""")
_EXPORT = sa.text("""
SELECT time, symbol, exchange, last_price::text, volume::text, exchange_time, local_time, trade_id, buyer_maker
FROM market_data
WHERE exchange = :exchange AND symbol = :symbol AND time >= :lo AND time < :hi
ORDER BY trade_id, time
""")


class ArchiveError(PermanentError):
    """Some (day, exchange, symbol) could not be archived; its day and later ones were kept."""


def _arrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("archive", "the Parquet archive needs pyarrow: "
                          "pip install 'ttquant-tasks[archive]'") from None
    return pa, pq


def arrow_schema() -> Any:
    pa, _ = _arrow()
    return pa.schema([
        ("time", pa.timestamp("us", tz="UTC")), ("symbol", pa.string()), ("exchange", pa.string()),
        ("last_price", pa.string()), ("volume", pa.string()), ("exchange_time", pa.int64()),
        ("local_time", pa.int64()), ("trade_id", pa.int64()), ("buyer_maker", pa.bool_()),
    ])


def archive_path(archive_dir: Path, exchange: str, symbol: str, day: date) -> Path:
    """Where the file of one UTC ``day`` of ``exchange``/``symbol`` goes; refuses names that are not
    plain path components (they come from the data, not from us)."""
    for key, value in (("exchange", exchange), ("symbol", symbol)):
        if not _SAFE.match(value):
            raise ArchiveError(f"{key} {value!r} cannot be used in a file name")
    base = Path(archive_dir) / "market_data" / f"exchange={exchange}" / f"symbol={symbol}"
    return base / f"{day.isoformat()}.parquet"


def horizon(now: datetime, older_than_days: int) -> datetime:
    """Start of the UTC day of ``now - older_than_days``: everything before it is old."""
    if older_than_days < 1:
        raise ConfigError("older_than_days", f"must be at least 1, got {older_than_days}")
    day = (now.astimezone(UTC) - timedelta(days=older_than_days)).date()
    return datetime.combine(day, time(), tzinfo=UTC)


def export_group(engine: sa.Engine, archive_dir: Path, day: date, exchange: str, symbol: str) -> dict[str, Any]:
    """Write one (day, exchange, symbol) to its Parquet file, merged with an existing one; verified.

    Returns ``{"day", "exchange", "symbol", "rows" (exported from the database), "file_rows", "path"}``.
    Raises :class:`ArchiveError` when the file read back does not hold the rows written.
    """
    pa, pq = _arrow()
    final = archive_path(archive_dir, exchange, symbol, day)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial")
    existing = pq.read_table(final) if final.exists() else None
    lo = datetime.combine(day, time(), tzinfo=UTC)
    params = {"exchange": exchange, "symbol": symbol, "lo": lo, "hi": lo + timedelta(days=1)}
    schema = arrow_schema()
    rows = 0
    seen: set[int] = set()
    try:
        with db_errors("archive"), engine.connect() as conn, pq.ParquetWriter(tmp, schema) as writer:
            result = conn.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(_EXPORT, params)
            for part in result.partitions():
                columns = list(zip(*part, strict=True))
                arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)]
                writer.write_batch(pa.record_batch(arrays, schema=schema))
                rows += len(part)
                if existing is not None:
                    seen.update(columns[_COLUMNS.index("trade_id")])
            kept = 0
            if existing is not None:
                mask = pa.array([tid not in seen for tid in existing.column("trade_id").to_pylist()])
                older = existing.filter(mask).cast(schema)
                kept = older.num_rows
                if kept:
                    writer.write_table(older)
        expected = rows + kept
        back = pq.read_table(tmp, columns=["trade_id"])
        if back.num_rows != expected or pq.ParquetFile(tmp).metadata.num_rows != expected:
            raise ArchiveError(f"{final}: wrote {expected} rows but read back {back.num_rows}")
        fsync_path(tmp)
        os.replace(tmp, final)
        fsync_path(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"day": day.isoformat(), "exchange": exchange, "symbol": symbol, "rows": rows,
            "file_rows": expected, "path": str(final)}


def _groups(conn: sa.Connection, cutoff: datetime) -> dict[tuple[date, str, str], int]:
    return {(r.day, r.exchange, r.symbol): int(r.n) for r in conn.execute(_GROUPS, {"cutoff": cutoff})}


Group = tuple[date, str, str]


def _drop(engine: sa.Engine, cutoff: datetime, archived: dict[Group, int]) -> tuple[datetime, list[str]]:
    """Drop what ends at or before ``cutoff`` -- moved back to the first day whose rows differ from
    what was archived -- while writers wait; returns the cutoff used and what was dropped."""
    with db_errors("retention"), engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL TimeZone = 'UTC'"))  # interval arithmetic below: no DST days
        conn.execute(sa.text("LOCK TABLE market_data IN SHARE MODE"))
        for (day, exchange, symbol), n in sorted(_groups(conn, cutoff).items()):
            if archived.get((day, exchange, symbol)) != n:
                cutoff = min(cutoff, datetime.combine(day, time(), tzinfo=UTC))
        # now() - (now() - cutoff) == cutoff exactly: the function measures from now().
        names = conn.execute(sa.text("SELECT ttquant_drop_partitions(now() - CAST(:c AS timestamptz))"),
                             {"c": cutoff}).scalars().all()
    return cutoff, [str(n) for n in names]


def archive_and_drop(engine: sa.Engine, archive_dir: Path, older_than_days: int) -> dict[str, Any]:
    """Archive market data older than ``older_than_days`` (whole UTC days) to Parquet, then drop it.

    Returns ``{"horizon", "dropped_before", "archived": [export_group results], "dropped": [partition
    or chunk names], "failed": [{"day", "exchange", "symbol", "error"}]}``.  Raises
    :class:`ArchiveError` after dropping the days before the first failure when any group failed,
    :class:`~ttquant_tasks.errors.ConfigError` without pyarrow or for a bad argument.
    """
    _arrow()
    with db_errors("retention"), engine.connect() as conn:
        now = conn.execute(sa.text("SELECT now()")).scalar_one()
        cutoff = horizon(now, older_than_days)
        groups = _groups(conn, cutoff)
    archived: dict[tuple[date, str, str], int] = {}
    results: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for (day, exchange, symbol) in sorted(groups):
        try:
            done = export_group(engine, Path(archive_dir), day, exchange, symbol)
        except (OSError, ArchiveError) as exc:
            failed.append({"day": day.isoformat(), "exchange": exchange, "symbol": symbol, "error": str(exc)})
            continue
        archived[(day, exchange, symbol)] = int(done["rows"])
        results.append(done)
    used, dropped = _drop(engine, cutoff, archived)
    report = {"horizon": cutoff.isoformat(), "dropped_before": used.isoformat(), "archived": results,
              "dropped": dropped, "failed": failed}
    if failed:
        first = failed[0]
        raise ArchiveError(f"{len(failed)} day/symbol files failed to archive (first: {first['day']} "
                           f"{first['exchange']} {first['symbol']}: {first['error']}); dropped only before "
                           f"{used.date().isoformat()}: {len(dropped)} partitions/chunks")
    return report
