-- 006_klines_cagg (plain PostgreSQL flavour): nothing to create.  Without TimescaleDB the klines
-- job aggregates market_data directly (ttquant_tasks/ops/klines.py); the version is recorded so
-- both flavours share one numbering.
SELECT 1;
