"""LISTEN/NOTIFY probes: the moment a row is committed, seen from a client.

:func:`install` adds row triggers to the bench database: every 10th tick of one exchange
notifies ``bench_tick`` with its exchange time (ns), every order insert notifies
``bench_order`` with its order id.  NOTIFY is delivered only at commit, so the receive time of a
notification is the commit-visible time (plus the listener's own delay, well under 1 ms idle).
"""

from __future__ import annotations

import contextlib
import select
import threading
import time

import psycopg2
import psycopg2.extensions

_SQL = """
CREATE OR REPLACE FUNCTION bench_notify_tick() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bench_tick', NEW.exchange_time::text); RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION bench_notify_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bench_order', NEW.order_id); RETURN NULL; END $$;
CREATE TRIGGER bench_tick AFTER INSERT ON market_data FOR EACH ROW
    WHEN (NEW.exchange = '{exchange}' AND NEW.trade_id % 10 = 0) EXECUTE FUNCTION bench_notify_tick();
CREATE TRIGGER bench_order AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION bench_notify_order();
"""
_DROP = "DROP TRIGGER IF EXISTS bench_tick ON market_data; DROP TRIGGER IF EXISTS bench_order ON orders;"


_PROBE_SQL = """
CREATE TABLE IF NOT EXISTS bench_probe (probe_id text PRIMARY KEY, t timestamptz NOT NULL DEFAULT now());
CREATE OR REPLACE FUNCTION bench_notify_probe() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bench_probe', NEW.probe_id); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS bench_probe ON bench_probe;
CREATE TRIGGER bench_probe AFTER INSERT ON bench_probe FOR EACH ROW EXECUTE FUNCTION bench_notify_probe();
"""


def install_probe(uri: str) -> None:
    """The ``bench_probe`` table the bench-only probe task inserts into; NOTIFY ``bench_probe`` per row."""
    _run(uri, _PROBE_SQL)


def remove_probe(uri: str) -> None:
    _run(uri, "DROP TABLE IF EXISTS bench_probe; DROP FUNCTION IF EXISTS bench_notify_probe();")


def _run(uri: str, sql: str) -> None:
    with contextlib.closing(psycopg2.connect(uri)) as conn, conn.cursor() as cur:
        cur.execute(sql)
        conn.commit()


def install(uri: str, exchange: str) -> None:
    if not exchange.replace("-", "").isalnum():
        raise ValueError(f"exchange name {exchange!r} is not safe to embed")
    _run(uri, _SQL.format(exchange=exchange))


def remove(uri: str) -> None:
    _run(uri, _DROP)


class Listener(threading.Thread):
    """Collects ``(channel, payload, received_ns)`` until :meth:`close`."""

    def __init__(self, uri: str, channels: tuple[str, ...]) -> None:
        super().__init__(name="bench-listen", daemon=True)
        self.conn = psycopg2.connect(uri)
        self.conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with self.conn.cursor() as cur:
            for ch in channels:
                cur.execute(f"LISTEN {ch}")
        self.events: list[tuple[str, str, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            if select.select([self.conn], [], [], 0.05)[0]:
                self.conn.poll()
                now = time.time_ns()
                while self.conn.notifies:
                    n = self.conn.notifies.pop(0)
                    self.events.append((n.channel, n.payload, now))

    def close(self) -> None:
        self._halt.set()
        self.join(5)
        self.conn.close()
