-- 001_init: bookkeeping, the TTQuant tables that are the same in both flavours, and the views.
--
-- Applied once, inside one transaction, by ttquant_tasks.storage.migrate (which records it in
-- schema_version).  Plain CREATE (not IF NOT EXISTS) on purpose: a database that already holds an
-- old TTQuant schema makes this fail loudly instead of silently keeping the old, lossy columns.
-- Prices and quantities are NUMERIC (exact exchange strings); times in *_time/timestamp columns
-- are bigint nanoseconds since the Unix epoch (UTC); `time` columns are timestamptz.

CREATE TABLE schema_version (
    version    int PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    name       text NOT NULL
);

-- key/value facts about this database, e.g. ('flavour', 'timescale' | 'plain')
CREATE TABLE ttquant_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Exact conversion of integer nanoseconds to timestamptz (truncated to the microsecond, the
-- resolution of timestamptz).  Integer arithmetic only: a float division would round wrongly.
CREATE FUNCTION ttquant_ns_to_timestamptz(ns bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT to_timestamp(ns / 1000000000) + (ns % 1000000000 / 1000) * interval '1 microsecond' $$;

CREATE TABLE orders (
    time        timestamptz NOT NULL DEFAULT now(),
    order_id    text PRIMARY KEY,
    strategy_id text NOT NULL,
    symbol      text NOT NULL,
    side        text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    price       numeric NOT NULL,
    volume      numeric NOT NULL,
    "timestamp" bigint NOT NULL,          -- ns, when the strategy made the order
    status      text NOT NULL DEFAULT 'NEW',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_strategy_time ON orders (strategy_id, time DESC);

CREATE TABLE trades (
    time          timestamptz NOT NULL DEFAULT now(),
    trade_id      text PRIMARY KEY,
    order_id      text NOT NULL,
    strategy_id   text NOT NULL,
    symbol        text NOT NULL,
    side          text NOT NULL,
    filled_price  numeric,
    filled_volume numeric,
    trade_time    bigint NOT NULL,        -- ns
    status        text NOT NULL,          -- FILLED / REJECTED
    error_code    int,
    error_message text,
    is_retryable  boolean,
    commission    numeric NOT NULL DEFAULT 0,
    realized_pnl  numeric
);
CREATE INDEX trades_strategy_time ON trades (strategy_id, time DESC);
CREATE INDEX trades_order_id ON trades (order_id);

-- One row per (strategy, symbol) per snapshot time: history, never updated in place.
CREATE TABLE positions (
    time           timestamptz NOT NULL,
    strategy_id    text NOT NULL,
    symbol         text NOT NULL,
    position       numeric NOT NULL,
    avg_price      numeric,
    unrealized_pnl numeric,
    realized_pnl   numeric,
    CONSTRAINT positions_natural_key UNIQUE (strategy_id, symbol, time)
);

CREATE TABLE account_balance (
    time        timestamptz NOT NULL,
    strategy_id text NOT NULL,
    balance     numeric NOT NULL,
    frozen      numeric NOT NULL DEFAULT 0,
    available   numeric NOT NULL,
    CONSTRAINT account_balance_natural_key UNIQUE (strategy_id, time)
);

-- Operational figures; value is a float on purpose (rates, latencies), never money.
CREATE TABLE metrics (
    time        timestamptz NOT NULL DEFAULT now(),
    component   text NOT NULL,
    metric_name text NOT NULL,
    value       double precision NOT NULL
);
CREATE INDEX metrics_name_time ON metrics (component, metric_name, time DESC);

CREATE TABLE klines (
    time       timestamptz NOT NULL,      -- open time of the bar
    symbol     text NOT NULL,
    exchange   text NOT NULL,
    "interval" text NOT NULL,             -- '1m', '1h', ...
    open       numeric NOT NULL,
    high       numeric NOT NULL,
    low        numeric NOT NULL,
    close      numeric NOT NULL,
    volume     numeric NOT NULL,
    CONSTRAINT klines_natural_key UNIQUE (exchange, symbol, "interval", time)
);

-- Payloads that can never succeed (malformed, constraint violation), kept with the reason.
CREATE TABLE dead_letters (
    id      bigserial PRIMARY KEY,
    time    timestamptz NOT NULL DEFAULT now(),
    task    text NOT NULL,
    reason  text NOT NULL,
    payload jsonb
);

-- How often a chunk was delivered again (worker lost, ack lost): caps poison-chunk loops.
CREATE TABLE chunk_deliveries (
    chunk_id   text PRIMARY KEY,
    deliveries int NOT NULL DEFAULT 1,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- Newest position row per strategy and symbol (as the TTQuant dashboards expect).
CREATE VIEW latest_positions AS
SELECT DISTINCT ON (strategy_id, symbol)
       time, strategy_id, symbol, position, avg_price, unrealized_pnl, realized_pnl
FROM positions
ORDER BY strategy_id, symbol, time DESC;

-- Per strategy over the last 24 hours.
CREATE VIEW strategy_stats AS
SELECT strategy_id,
       count(*)                                        AS total_trades,
       count(*) FILTER (WHERE status = 'FILLED')       AS filled_trades,
       count(*) FILTER (WHERE status = 'REJECTED')     AS rejected_trades,
       avg(filled_price) FILTER (WHERE status = 'FILLED') AS avg_fill_price,
       sum(commission)                                 AS total_commission,
       sum(realized_pnl)                               AS realized_pnl
FROM trades
WHERE time > now() - interval '24 hours'
GROUP BY strategy_id;
