-- 002_market_data (TimescaleDB flavour): trade prints in a hypertable with 1-day chunks.
--
-- Same columns and natural key as the plain flavour.  TimescaleDB requires every unique index of
-- a hypertable to include the time column: the natural key (exchange, symbol, trade_id, time) does.
-- metrics and klines become hypertables too (both are append-mostly time series).

CREATE EXTENSION IF NOT EXISTS timescaledb;

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
);

-- create_default_indexes => false: we make the (symbol, time DESC) index ourselves, the same in
-- both flavours.  The positional call form works on TimescaleDB 2.x old and new.
SELECT create_hypertable('market_data', 'time', chunk_time_interval => interval '1 day',
                         create_default_indexes => false, if_not_exists => true);
CREATE INDEX market_data_symbol_time ON market_data (symbol, time DESC);

SELECT create_hypertable('metrics', 'time', chunk_time_interval => interval '1 day',
                         migrate_data => true, if_not_exists => true);
-- klines: far fewer rows per day than trades, so weekly chunks.
SELECT create_hypertable('klines', 'time', chunk_time_interval => interval '7 days',
                         migrate_data => true, if_not_exists => true);
