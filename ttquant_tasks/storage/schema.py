"""SQLAlchemy Core tables mirroring ``sql/`` for building queries.

The DDL truth is ``sql/`` (applied by :mod:`.migrate`); never ``metadata.create_all`` these.
Prices and quantities are NUMERIC, read back as :class:`decimal.Decimal`; ``*_time`` and
``timestamp`` columns are bigint nanoseconds since the epoch (UTC); ``time`` is timestamptz.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()
_TS = sa.DateTime(timezone=True)


def _time(nullable: bool = False) -> sa.Column[object]:
    return sa.Column("time", _TS, nullable=nullable)


market_data = sa.Table(
    "market_data", metadata,
    _time(),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("last_price", sa.Numeric, nullable=False),
    sa.Column("volume", sa.Numeric, nullable=False),
    sa.Column("exchange_time", sa.BigInteger, nullable=False),
    sa.Column("local_time", sa.BigInteger, nullable=False),
    sa.Column("trade_id", sa.BigInteger, nullable=False),
    sa.Column("buyer_maker", sa.Boolean),
    sa.UniqueConstraint("exchange", "symbol", "trade_id", "time", name="market_data_natural_key"),
)

orders = sa.Table(
    "orders", metadata,
    _time(),
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("strategy_id", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("price", sa.Numeric, nullable=False),
    sa.Column("volume", sa.Numeric, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
)

trades = sa.Table(
    "trades", metadata,
    _time(),
    sa.Column("trade_id", sa.Text, primary_key=True),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("strategy_id", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("filled_price", sa.Numeric),
    sa.Column("filled_volume", sa.Numeric),
    sa.Column("trade_time", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error_code", sa.Integer),
    sa.Column("error_message", sa.Text),
    sa.Column("is_retryable", sa.Boolean),
    sa.Column("commission", sa.Numeric, nullable=False),
    sa.Column("realized_pnl", sa.Numeric),
)

positions = sa.Table(
    "positions", metadata,
    _time(),
    sa.Column("strategy_id", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("position", sa.Numeric, nullable=False),
    sa.Column("avg_price", sa.Numeric),
    sa.Column("unrealized_pnl", sa.Numeric),
    sa.Column("realized_pnl", sa.Numeric),
    sa.UniqueConstraint("strategy_id", "symbol", "time", name="positions_natural_key"),
)

account_balance = sa.Table(
    "account_balance", metadata,
    _time(),
    sa.Column("strategy_id", sa.Text, nullable=False),
    sa.Column("balance", sa.Numeric, nullable=False),
    sa.Column("frozen", sa.Numeric, nullable=False),
    sa.Column("available", sa.Numeric, nullable=False),
    sa.UniqueConstraint("strategy_id", "time", name="account_balance_natural_key"),
)

metrics = sa.Table(
    "metrics", metadata,
    _time(),
    sa.Column("component", sa.Text, nullable=False),
    sa.Column("metric_name", sa.Text, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
)

klines = sa.Table(
    "klines", metadata,
    _time(),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("interval", sa.Text, nullable=False),
    sa.Column("open", sa.Numeric, nullable=False),
    sa.Column("high", sa.Numeric, nullable=False),
    sa.Column("low", sa.Numeric, nullable=False),
    sa.Column("close", sa.Numeric, nullable=False),
    sa.Column("volume", sa.Numeric, nullable=False),
    sa.UniqueConstraint("exchange", "symbol", "interval", "time", name="klines_natural_key"),
)

dead_letters = sa.Table(
    "dead_letters", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("time", _TS, nullable=False, server_default=sa.func.now()),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", JSONB),
)

chunk_deliveries = sa.Table(
    "chunk_deliveries", metadata,
    sa.Column("chunk_id", sa.Text, primary_key=True),
    sa.Column("deliveries", sa.Integer, nullable=False),
    sa.Column("first_seen", _TS, nullable=False),
    sa.Column("last_seen", _TS, nullable=False),
)

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", _TS, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
)

ttquant_meta = sa.Table(
    "ttquant_meta", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Views (read-only).
latest_positions = sa.Table(
    "latest_positions", metadata,
    _time(),
    sa.Column("strategy_id", sa.Text),
    sa.Column("symbol", sa.Text),
    sa.Column("position", sa.Numeric),
    sa.Column("avg_price", sa.Numeric),
    sa.Column("unrealized_pnl", sa.Numeric),
    sa.Column("realized_pnl", sa.Numeric),
)

strategy_stats = sa.Table(
    "strategy_stats", metadata,
    sa.Column("strategy_id", sa.Text),
    sa.Column("total_trades", sa.BigInteger),
    sa.Column("filled_trades", sa.BigInteger),
    sa.Column("rejected_trades", sa.BigInteger),
    sa.Column("avg_fill_price", sa.Numeric),
    sa.Column("total_commission", sa.Numeric),
    sa.Column("realized_pnl", sa.Numeric),
)

TABLES = ("market_data", "orders", "trades", "positions", "account_balance", "metrics", "klines",
          "dead_letters", "chunk_deliveries")
"""The data tables (not views, not bookkeeping), e.g. for :func:`.queries.table_counts`."""
