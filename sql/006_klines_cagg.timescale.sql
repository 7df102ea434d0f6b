-- 006_klines_cagg (TimescaleDB flavour): 1-minute OHLCV as a continuous aggregate of market_data.
--
-- Real-time (materialized_only = false): a query sees materialized buckets plus the not yet
-- materialized tail, so bars are current without waiting for the policy.  open/close are the prices
-- of the lowest/highest trade id of the minute (timestamps can tie), as in the plain rollup.
-- `klines` stays the table existing TTQuant tools read: beat's klines job upserts from this view.
-- WITH NO DATA: allowed inside the migration's transaction; the policy materializes in the background.
CREATE MATERIALIZED VIEW klines_1m_cagg
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket('1 minute', time) AS bucket, exchange, symbol,
       first(last_price, trade_id) AS open, max(last_price) AS high, min(last_price) AS low,
       last(last_price, trade_id) AS close, sum(volume) AS volume
FROM market_data
GROUP BY bucket, exchange, symbol
WITH NO DATA;

SELECT add_continuous_aggregate_policy('klines_1m_cagg', start_offset => INTERVAL '2 days',
                                       end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
