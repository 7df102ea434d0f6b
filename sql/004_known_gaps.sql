-- 004_known_gaps: trade-id ranges the feed knows it could not fetch (same in both flavours).
--
-- The Binance feed records here every range of missed trade ids its REST backfill could not fill
-- (rate limits, a 418 ban, a window larger than TTQUANT_BACKFILL_MAX_IDS, ids not published yet),
-- so a hole is never silent.  A later start of the feed retries open ranges (filled_at IS NULL) and
-- sets filled_at when the retry got every id.  Idempotent: the key is the range itself.

CREATE TABLE known_gaps (
    exchange    text NOT NULL,
    symbol      text NOT NULL,
    from_id     bigint NOT NULL,          -- first missing trade id (inclusive)
    to_id       bigint NOT NULL,          -- last missing trade id (inclusive)
    reason      text NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    filled_at   timestamptz,              -- NULL while open
    CONSTRAINT known_gaps_range CHECK (from_id <= to_id),
    PRIMARY KEY (exchange, symbol, from_id, to_id)
);
CREATE INDEX known_gaps_open ON known_gaps (exchange, symbol) WHERE filled_at IS NULL;
