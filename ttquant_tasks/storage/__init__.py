"""PostgreSQL / TimescaleDB storage: schema (``sql/`` + :mod:`.schema`), migrations
(:mod:`.migrate`), one engine per process (:mod:`.engine`), idempotent bulk writers
(:mod:`.writers`) and read queries (:mod:`.queries`)."""
