"""Child process: ``celery -A ttquant_tasks worker <args>``, plus one line on stderr when ready.

The same app and worker as the command line; the additions: a ``worker_ready`` hook, so the bench
can run the worker at ``--loglevel WARNING`` (no per-task log lines costing CPU) and still know
when it consumes; and the bench-only task ``ttquant.bench_probe`` (:func:`probe`), the floor of
figure 5: a Celery task that does nothing but one autocommit INSERT.
"""

from __future__ import annotations

import sys
from typing import Any

READY = "bench-worker-ready"
PROBE_TASK = "ttquant.bench_probe"
_probe_conn: dict[str, Any] = {}


def probe(probe_id: str, db_uri: str) -> None:
    """Insert ``probe_id`` into ``bench_probe`` (one autocommit statement on a connection kept per
    process): none of our storage code, so its latency is Celery + broker + PostgreSQL alone."""
    import psycopg2

    conn = _probe_conn.get(db_uri)
    if conn is None or conn.closed:
        conn = _probe_conn[db_uri] = psycopg2.connect(db_uri)
        conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("INSERT INTO bench_probe (probe_id) VALUES (%s) ON CONFLICT DO NOTHING", (probe_id,))


def main(argv: list[str]) -> None:
    from celery.signals import worker_ready

    import ttquant_tasks

    def ready(**_: Any) -> None:
        print(READY, file=sys.__stderr__, flush=True)

    worker_ready.connect(ready, weak=False)
    ttquant_tasks.app.task(name=PROBE_TASK, acks_late=True, ignore_result=True)(probe)
    ttquant_tasks.app.worker_main(["worker", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
