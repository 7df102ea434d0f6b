-- 002_market_data (plain PostgreSQL flavour): trade prints, RANGE-partitioned by UTC day on `time`.
--
-- Natural key (exchange, symbol, trade_id, time): a retried chunk is absorbed by ON CONFLICT DO
-- NOTHING, and two distinct trades sharing a timestamp are both kept.  `time` is the exchange trade
-- time; exchange_time/local_time keep the full nanoseconds.
--
-- Partitions: one per UTC day, named market_data_pYYYYMMDD, created by ttquant_ensure_day()
-- (003).  A DEFAULT partition catches rows for a day that has no partition yet (e.g. a foreign
-- writer backfilling an old day), so an insert never fails; ttquant_ensure_day() moves such rows
-- into the day's own partition when it creates it.  Our writer calls ttquant_ensure_day() for
-- every day of a chunk before inserting, so its rows never land in the default partition.

CREATE TABLE market_data (
    time          timestamptz NOT NULL,
    symbol        text NOT NULL,
    exchange      text NOT NULL,
    last_price    numeric NOT NULL,
    volume        numeric NOT NULL,
    exchange_time bigint NOT NULL,        -- ns, exchange trade time
    local_time    bigint NOT NULL,        -- ns, when we received it
    trade_id      bigint NOT NULL,
    buyer_maker   boolean,
    CONSTRAINT market_data_natural_key UNIQUE (exchange, symbol, trade_id, time)
) PARTITION BY RANGE (time);

CREATE INDEX market_data_symbol_time ON market_data (symbol, time DESC);

CREATE TABLE market_data_default PARTITION OF market_data DEFAULT;
