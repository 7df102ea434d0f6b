"""Maintenance tasks (``maintenance`` queue, scheduled by ``celery beat``): thin wrappers.

Each task runs one plain function of :mod:`ttquant_tasks.ops` (or :mod:`.parking`) through
:func:`run_job`, which

* takes the job's PostgreSQL advisory lock (:func:`ttquant_tasks.ops.locks.job_lock`) and skips
  the run when another process holds it: two beat processes by mistake never run a job twice at
  once (a ``job.NAME``/``skipped`` metrics row records the skip);
* records ``job.NAME``/``run_s`` (time = start, UTC; value = seconds) when the run succeeded;
* on failure logs the reason, records ``job.NAME``/``job_failed`` and re-raises, so the task shows
  as failed in Flower.  Nothing is retried automatically: the next beat run is the retry.

Every job is idempotent, so a run that is delivered twice (lost ack) does no harm.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import Task

from ..errors import TTQuantError
from . import parking
from .app import PARKED, WORK_QUEUES

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .app import TTQuantCelery

log = logging.getLogger(__name__)

KLINES_LOOKBACK = timedelta(minutes=5)
"""The klines job re-rolls at least the last 5 minutes, so late ticks correct their bars."""
LONG_JOB_LIMIT_S = 6 * 3600
"""Backups and archives of months of ticks outlast the task time limit of the write tasks.  On
Redis a run longer than the visibility timeout is delivered again; that copy finds the lock held
and skips."""


def _engine(app: TTQuantCelery) -> sa.Engine:
    from ..storage.engine import get_engine

    return get_engine(app.settings.db_uri)


# Jobs that take table locks or a long snapshot (pg_dump; partition attach/drop; chunk drops) run
# one at a time: a backup's snapshot and a partition ATTACH can otherwise wait on each other in a
# way PostgreSQL does not detect as a deadlock.
SCHEMA_JOBS = frozenset({"backup", "partitions", "retention"})
SCHEMA_LOCK_WAIT_S = 60.0  # below the default task time limit; a skipped run is retried by the next beat


def run_job(app: TTQuantCelery, name: str, job: Callable[[], Any]) -> dict[str, Any]:
    """Run ``job`` under the lock of ``name`` (and the shared schema lock for :data:`SCHEMA_JOBS`,
    waited for up to ``SCHEMA_LOCK_WAIT_S``); ``{"job", "skipped", "result"?, "seconds"?}``."""
    from ..ops.locks import job_lock
    from ..ops.metrics import record

    component = f"job.{name}"
    engine = _engine(app)
    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    try:
        schema = (job_lock(engine, "schema", wait_s=SCHEMA_LOCK_WAIT_S) if name in SCHEMA_JOBS
                  else contextlib.nullcontext(True))
        with job_lock(engine, name) as acquired, schema as schema_ok:
            if not (acquired and schema_ok):
                log.info("job %s skipped: another process is running it (or a schema job)", name)
                record(engine, [(component, "skipped", 1.0)])
                return {"job": name, "skipped": True}
            result = job()
            seconds = time.monotonic() - t0
            # Written while the lock is still held: runs of one job never overlap in these rows.
            record(engine, [(component, "run_s", seconds)], at=started_at)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        # Our own errors carry their reason; anything else is a bug and gets its traceback.
        log.error("job %s failed: %s", name, reason, exc_info=not isinstance(exc, TTQuantError))
        try:
            record(engine, [(component, "job_failed", 1.0)])
        except Exception as rec_exc:
            log.error("job %s: could not record the failure in metrics: %s", name, rec_exc)
        raise
    log.info("job %s done in %.3fs: %s", name, seconds, result)
    return {"job": name, "skipped": False, "seconds": round(seconds, 3), "result": result}


def _backup(app: TTQuantCelery) -> dict[str, Any]:
    from ..ops.backup import backup

    settings = app.settings
    pg_bin = None
    if app.db_embedded:
        # The embedded server is PostgreSQL 18; the machine's pg_dump may be older.
        from ..services.embedded import pg_bin_dir

        pg_bin = pg_bin_dir()
    assert settings.db_uri is not None  # resolved by app.settings
    return backup(settings.db_uri, settings.backups_path, settings.backup_keep, pg_bin=pg_bin).as_dict()


def _klines(app: TTQuantCelery) -> int:
    from ..ops.klines import rollup_klines

    now = datetime.now(UTC)
    lookback = max(KLINES_LOOKBACK, timedelta(seconds=2 * app.settings.klines_interval))
    return rollup_klines(_engine(app), now - lookback, now)


def _metrics(app: TTQuantCelery) -> int:
    from ..ops.metrics import record_figures

    settings = app.settings
    try:
        depths = parking.queue_depths(app, (*WORK_QUEUES, PARKED))
    except Exception as exc:  # figures of the database are still worth writing
        log.warning("metrics: queue depths unavailable: %s", exc)
        depths = {}
    rows = record_figures(_engine(app), settings.exchange, settings.symbols, settings.metrics_interval, depths)
    return len(rows)


def register(app: TTQuantCelery) -> None:
    opts: dict[str, Any] = {"bind": True, "acks_late": True, "ignore_result": True}
    long_opts = {**opts, "time_limit": LONG_JOB_LIMIT_S, "soft_time_limit": LONG_JOB_LIMIT_S - 60}

    @app.task(name="ttquant.flush", **opts)
    def flush(self: Task, limit: int = 100_000) -> dict[str, Any]:
        """Move parked chunks back to their queues when the database answers."""
        return run_job(app, "flush", lambda: parking.flush(app, limit=limit))

    @app.task(name="ttquant.partitions", **opts)
    def partitions(self: Task) -> dict[str, Any]:
        """Plain: day partitions ahead.  TimescaleDB: compression/metrics policies present, no
        market_data retention policy (the archive job drops)."""
        from ..ops.partitions import ensure_partitions

        return run_job(app, "partitions", lambda: ensure_partitions(_engine(app), app.settings.partitions_ahead))

    @app.task(name="ttquant.retention", **long_opts)
    def retention(self: Task) -> dict[str, Any]:
        """Archive market data older than ``retention_days`` to Parquet, verify, then drop it."""
        from ..ops.retention import archive_and_drop

        s = app.settings
        return run_job(app, "retention", lambda: archive_and_drop(_engine(app), s.archive_path, s.retention_days))

    @app.task(name="ttquant.mark_to_market", **opts)
    def mark_to_market(self: Task) -> dict[str, Any]:
        """Position snapshots with unrealized PnL at the latest prices."""
        from ..ops.marks import mark_to_market as mark

        return run_job(app, "mark_to_market", lambda: mark(_engine(app), app.settings.exchange))

    @app.task(name="ttquant.klines", **opts)
    def klines(self: Task) -> dict[str, Any]:
        """1-minute OHLCV of the last minutes (idempotent upsert)."""
        return run_job(app, "klines", lambda: _klines(app))

    @app.task(name="ttquant.metrics", **opts)
    def metrics(self: Task) -> dict[str, Any]:
        """Ticks/s, queue depths, parked count and feed lag per symbol into ``metrics``."""
        return run_job(app, "metrics", lambda: _metrics(app))

    @app.task(name="ttquant.backup", **long_opts)
    def backup(self: Task) -> dict[str, Any]:
        """pg_dump -Fc, verified, newest ``backup_keep`` kept."""
        return run_job(app, "backup", lambda: _backup(app))
