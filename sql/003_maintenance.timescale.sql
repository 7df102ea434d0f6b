-- 003_maintenance (TimescaleDB flavour): compression and retention policies, and the same
-- maintenance functions as the plain flavour so callers need not know the flavour:
--   ttquant_ensure_day(day date) -> boolean          no-op (hypertables create chunks themselves)
--   ttquant_ensure_partitions(days_ahead int) -> int no-op, returns 0
--   ttquant_drop_partitions(older_than interval) -> setof text   drop_chunks on market_data
--
-- Compression: segment by (exchange, symbol) so the natural key can be checked inside one segment
-- when a late insert meets a compressed chunk; ordered by time.  Backfill older than the
-- compression horizon lands in compressed chunks (ON CONFLICT DO NOTHING works there on
-- TimescaleDB >= 2.11, at a cost); older than the retention horizon it is dropped at the next run.

ALTER TABLE market_data SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'time'
);
SELECT add_compression_policy('market_data', interval '7 days', if_not_exists => true);
SELECT add_retention_policy('market_data', interval '30 days', if_not_exists => true);
SELECT add_retention_policy('metrics', interval '7 days', if_not_exists => true);

CREATE FUNCTION ttquant_ensure_day(day date) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT false $$;

CREATE FUNCTION ttquant_ensure_partitions(days_ahead int) RETURNS int
LANGUAGE plpgsql AS $$
BEGIN
    IF days_ahead IS NULL OR days_ahead < 0 OR days_ahead > 366 THEN
        RAISE EXCEPTION 'ttquant_ensure_partitions: days_ahead must be 0..366, got %', days_ahead;
    END IF;
    RETURN 0;
END
$$;

CREATE FUNCTION ttquant_drop_partitions(older_than interval) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'ttquant_drop_partitions: older_than must be a positive interval, got %', older_than;
    END IF;
    RETURN QUERY SELECT c::text FROM drop_chunks('market_data', older_than => older_than) AS c;
END
$$;
