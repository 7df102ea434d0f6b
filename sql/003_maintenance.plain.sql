-- 003_maintenance (plain PostgreSQL flavour): daily partitions of market_data.
--
-- The same three functions exist in the TimescaleDB flavour, so maintenance code and the writer
-- call them without asking which flavour the database is:
--   ttquant_ensure_day(day date) -> boolean         partition for one UTC day (true: created now)
--   ttquant_ensure_partitions(days_ahead int) -> int  today .. today + days_ahead (UTC); count created
--   ttquant_drop_partitions(older_than interval) -> setof text  names of the partitions dropped
-- All are idempotent.  Day bounds are UTC whatever the session TimeZone is.

CREATE FUNCTION ttquant_ensure_day(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'market_data_p' || to_char(day, 'YYYYMMDD');
    lo   timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi   timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF day IS NULL THEN
        RAISE EXCEPTION 'ttquant_ensure_day: day must not be null';
    END IF;
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;                       -- the common case: no lock taken
    END IF;
    -- Concurrent writers of a new day queue here instead of failing on a duplicate name;
    -- the lock is held to the end of the caller's transaction.
    PERFORM pg_advisory_xact_lock(hashtext('ttquant_market_data_partitions'));
    -- A query, not to_regclass: the catalog cache may not show yet what the lock holder committed.
    IF EXISTS (SELECT 1 FROM pg_class WHERE relname = part AND relnamespace = current_schema()::regnamespace) THEN
        RETURN false;
    END IF;
    -- Build the partition standalone, move that day's rows out of the DEFAULT partition (attaching
    -- would fail while the default partition still holds rows of the new range), then attach.
    -- ATTACH creates the partition's copies of the parent's indexes and unique key.
    EXECUTE format('CREATE TABLE %I (LIKE market_data INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (time >= %L AND time < %L)',
                   part, part || '_range', lo, hi);
    EXECUTE format('WITH moved AS (DELETE FROM market_data_default WHERE time >= %L AND time < %L '
                   'RETURNING *) INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format('ALTER TABLE market_data ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    -- The CHECK only spared ATTACH a validation scan; the partition bound now says the same.
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_range');
    RETURN true;
EXCEPTION WHEN duplicate_table THEN
    -- Created by a concurrent transaction that a REPEATABLE READ caller's snapshot cannot see.
    RETURN false;
END
$$;

CREATE FUNCTION ttquant_ensure_partitions(days_ahead int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    today   date := (now() AT TIME ZONE 'UTC')::date;
    created int := 0;
BEGIN
    IF days_ahead IS NULL OR days_ahead < 0 OR days_ahead > 366 THEN
        RAISE EXCEPTION 'ttquant_ensure_partitions: days_ahead must be 0..366, got %', days_ahead;
    END IF;
    FOR i IN 0 .. days_ahead LOOP
        IF ttquant_ensure_day(today + i) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Drops whole day partitions whose every row is older than now() - older_than.  Rows that sit
-- in the DEFAULT partition are left alone (it is normally empty: see 002).
CREATE FUNCTION ttquant_drop_partitions(older_than interval) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'ttquant_drop_partitions: older_than must be a positive interval, got %', older_than;
    END IF;
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'market_data'::regclass
          AND c.relname ~ '^market_data_p[0-9]{8}$'
          AND ((to_date(substr(c.relname, 14), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC')
              <= now() - older_than
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END
$$;
