"""Operations: the plain functions behind the periodic jobs and the operator commands.

    backup.py     pg_dump -Fc to a directory, checksum + row-count sidecar, keep N, verify
    restore.py    checksum check, pg_restore into an empty database, row counts compared
    klines.py     1-minute OHLCV from market_data into klines (idempotent upsert)
    retention.py  export old market data to Parquet, verify, then drop those days only
    locks.py      a PostgreSQL advisory lock per job, so two beat processes never overlap

Nothing here imports Celery: the tasks in :mod:`ttquant_tasks.tasks.maintenance` are thin
wrappers, and tests call these functions directly against a real database.
"""
