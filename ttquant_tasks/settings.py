"""One frozen settings object, built from the environment once per entry point.

Every value is read and validated in :meth:`Settings.from_env`; a bad value raises
:class:`~ttquant_tasks.errors.ConfigError` naming the key.  Nothing else in the package reads
``os.environ`` (except :mod:`ttquant_tasks.services` when it resolves the embedded defaults, which
it does through a ``Settings``).  Secrets print masked: ``repr(settings)`` and :func:`mask_url`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError

T = TypeVar("T")

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")


def default_tick_concurrency() -> int:
    """Tick worker processes by default: one more than the cores.

    A tick chunk's write waits about a fifth of its time (PostgreSQL's commit flush, the Redis and
    pool hand-offs), so with one child per core the cores idle that fifth; one more child fills it.
    Measured on 2 cores (docs/benchmarks.md): a 60 s outage's backlog drained in a median 9.4 s with
    3 children against 11.1 s with 2, alternating, 4-5 runs each.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores + 1  # the cores this process may run on, as `nproc` counts them (Procfile, compose)


def mask_url(url: str | None) -> str | None:
    """``url`` with any password replaced by ``***`` (DSNs, broker URLs)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _parse_symbols(raw: str) -> tuple[str, ...]:
    symbols = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
    if not symbols:
        raise ValueError("needs at least one symbol, e.g. BTCUSDT,ETHUSDT")
    for s in symbols:
        if not _SYMBOL_RE.match(s):
            raise ValueError(f"{s!r} is not a symbol (letters and digits, like BTCUSDT)")
    return symbols


def _positive_int(raw: str) -> int:
    v = int(raw)
    if v <= 0:
        raise ValueError(f"must be a positive integer, got {raw!r}")
    return v


def _non_negative_int(raw: str) -> int:
    v = int(raw)
    if v < 0:
        raise ValueError(f"must be >= 0, got {raw!r}")
    return v


def _positive_float(raw: str) -> float:
    v = float(raw)
    if not v > 0 or v != v or v == float("inf"):
        raise ValueError(f"must be a positive number of seconds, got {raw!r}")
    return v


def _non_negative_float(raw: str) -> float:
    v = float(raw)
    if not v >= 0 or v == float("inf"):
        raise ValueError(f"must be a number of seconds >= 0, got {raw!r}")
    return v


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        if scheme not in schemes:
            raise ValueError(f"must be a URL starting with one of {', '.join(s + '://' for s in schemes)}")
        return raw

    return parse


def _zmq_endpoint(raw: str) -> str:
    if not re.match(r"^(tcp|ipc|inproc)://\S+$", raw):
        raise ValueError(f"{raw!r} is not a ZeroMQ endpoint like tcp://*:5555")
    return raw


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _existing_file(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _bps(raw: str) -> Decimal:
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ValueError(f"must be a number of basis points, got {raw!r}") from None
    if not value.is_finite() or not 0 <= value <= 1000:
        raise ValueError(f"must be between 0 and 1000 basis points, got {raw!r}")
    return value


_SECRETS = ("binance_api_key", "binance_api_secret")
_DB_SCHEMES = ("postgresql", "postgresql+psycopg2", "postgres")
_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Runtime configuration.  Field docs give the environment variable and the unit."""

    db_uri: str | None = None
    """``DB_URI``: PostgreSQL DSN.  None: the embedded PostgreSQL under ``home``."""
    db_read_uri: str | None = None
    """``DB_READ_URI``: replica for status/audit queries; defaults to ``db_uri``."""
    broker_url: str | None = None
    """``CELERY_BROKER_URL``: redis:// or amqp://.  None: the embedded Redis under ``home``."""
    home: Path = Path("~/.ttquant").expanduser()
    """``TTQUANT_HOME``: data directory (embedded services, spool, backups)."""
    market: str = "binance"
    """``MARKET``: market data source name, as TTQuant services use it."""
    exchange: str = "binance"
    """``EXCHANGE``: exchange name stored with every row and used in ZMQ topics."""
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    """``TTQUANT_SYMBOLS``: comma-separated, upper case as the exchange sends them."""
    zmq_pub_endpoint: str = "tcp://*:5555"
    """``ZMQ_PUB_ENDPOINT``: market-data PUB bind endpoint (feed)."""
    zmq_pull_endpoint: str = "tcp://*:5556"
    """``ZMQ_PULL_ENDPOINT``: order PULL bind endpoint (gateway)."""
    zmq_trade_endpoint: str = "tcp://*:5557"
    """``ZMQ_TRADE_ENDPOINT``: trade PUB bind endpoint (gateway)."""
    chunk_size: int = 1000
    """``TTQUANT_CHUNK_SIZE``: ticks per chunk (max); a chunk is sent when full ...
    (1000: measured best, docs/benchmarks.md; TTQuant used 100, ~3x slower end to end here)"""
    chunk_age: float = 1.0
    """``TTQUANT_CHUNK_AGE``: ... or when its oldest tick is this many seconds old."""
    enqueue_queue_max: int = 10_000
    """``TTQUANT_ENQUEUE_QUEUE_MAX``: chunks held in memory before the spool takes them."""
    publish_timeout: float = 1.0
    """``TTQUANT_PUBLISH_TIMEOUT``: seconds a publish to the broker may take before we spool."""
    resend_after: float = 120.0
    """``TTQUANT_RESEND_AFTER``: seconds after which a published chunk or record whose rows are not
    in the database is sent again (when the broker holds no backlog); 0 turns confirmation off."""
    write_retries: int = 5
    """``TTQUANT_WRITE_RETRIES``: retries of a transient write failure before the chunk is parked."""
    retry_backoff_max: float = 30.0
    """``TTQUANT_RETRY_BACKOFF_MAX``: cap of the exponential retry backoff, seconds."""
    max_deliveries: int = 5
    """``TTQUANT_MAX_DELIVERIES``: redeliveries (worker lost) before a chunk is parked as poison."""
    visibility_timeout: int = 3600
    """``TTQUANT_VISIBILITY_TIMEOUT``: Redis redelivery of unacked messages, seconds."""
    task_time_limit: int = 120
    """``TTQUANT_TASK_TIME_LIMIT``: hard limit of one task, seconds; far below visibility_timeout."""
    log_level: str = "INFO"
    """``TTQUANT_LOG_LEVEL``."""
    risk_file: Path | None = None
    """``TTQUANT_RISK_FILE``: the gateway's risk limits (TOML); None: the packaged default."""
    md_connect: str = "tcp://127.0.0.1:5555"
    """``TTQUANT_MD_CONNECT``: where the gateway subscribes to market data (last prices)."""
    execution: str = "paper"
    """``TTQUANT_EXECUTION``: ``paper`` (default) or ``binance`` (signed REST orders)."""
    paper_slippage_bps: Decimal = Decimal("1")
    """``TTQUANT_PAPER_SLIPPAGE_BPS``: paper fills pay this much beyond the last price."""
    paper_commission_bps: Decimal = Decimal("10")
    """``TTQUANT_PAPER_COMMISSION_BPS``: paper commission, of the notional."""
    binance_api_key: str | None = None
    """``BINANCE_API_KEY`` (never printed)."""
    binance_api_secret: str | None = None
    """``BINANCE_API_SECRET`` (never printed)."""
    binance_order_url: str = "https://testnet.binance.vision"
    """``BINANCE_ORDER_URL``: REST base for orders; the testnet unless you mean it."""
    binance_rest_url: str = "https://api.binance.com"
    """``BINANCE_REST_URL``: REST base for market data (gap backfill)."""
    binance_ws_url: str = "wss://stream.binance.com:9443"
    """``BINANCE_WS_URL``: websocket base for market streams."""
    backfill_max_ids: int = 200_000
    """``TTQUANT_BACKFILL_MAX_IDS``: most trade ids one gap backfill fetches over REST; the rest is a known gap."""
    binance_max_age: float = 23.5 * 3600
    """``TTQUANT_BINANCE_MAX_AGE``: seconds a websocket lives before it is rotated (Binance closes at 24 h)."""
    binance_stale_after: float = 30.0
    """``TTQUANT_BINANCE_STALE_AFTER``: seconds without any frame (pings included) before a reconnect."""
    flush_interval: float = 60.0
    """``TTQUANT_FLUSH_INTERVAL``: seconds between beat ``flush`` runs (parked chunks back)."""
    partitions_interval: float = 3600.0
    """``TTQUANT_PARTITIONS_INTERVAL``: seconds between beat ``partitions`` runs."""
    retention_interval: float = 86400.0
    """``TTQUANT_RETENTION_INTERVAL``: seconds between beat ``retention`` (archive + drop) runs."""
    mark_interval: float = 60.0
    """``TTQUANT_MARK_INTERVAL``: seconds between beat ``mark_to_market`` runs."""
    klines_interval: float = 60.0
    """``TTQUANT_KLINES_INTERVAL``: seconds between beat ``klines`` runs."""
    metrics_interval: float = 60.0
    """``TTQUANT_METRICS_INTERVAL``: seconds between beat ``metrics`` runs."""
    backup_interval: float = 86400.0
    """``TTQUANT_BACKUP_INTERVAL``: seconds between beat ``backup`` runs."""
    backup_dir: Path | None = None
    """``TTQUANT_BACKUP_DIR``: where backups go; None: ``home/backups``."""
    backup_keep: int = 7
    """``TTQUANT_BACKUP_KEEP``: newest backups kept."""
    archive_dir: Path | None = None
    """``TTQUANT_ARCHIVE_DIR``: Parquet archive of market data; None: ``home/archive``."""
    retention_days: int = 30
    """``TTQUANT_RETENTION_DAYS``: market data older than this many UTC days is archived, then dropped."""
    partitions_ahead: int = 7
    """``TTQUANT_PARTITIONS_AHEAD``: days of market_data partitions created ahead (plain flavour)."""

    def __post_init__(self) -> None:
        if self.task_time_limit * 2 > self.visibility_timeout:
            raise ConfigError(
                "TTQUANT_VISIBILITY_TIMEOUT",
                f"must be at least twice TTQUANT_TASK_TIME_LIMIT ({self.task_time_limit}s), "
                f"else a slow task is delivered twice; got {self.visibility_timeout}",
            )

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    @property
    def feed_stats_path(self) -> Path:
        """The feed's figures (counts, rates, last trade ids), for ``up``/``status`` and restarts."""
        return self.home / "run" / "feed.json"

    @property
    def gateway_stats_path(self) -> Path:
        """The gateway's figures (orders, fills, rejections, records enqueued / spooled, journal), for ``status``."""
        return self.home / "run" / "gateway.json"

    @property
    def backups_path(self) -> Path:
        """``backup_dir``, or ``home/backups`` when unset."""
        return self.backup_dir or self.home / "backups"

    @property
    def archive_path(self) -> Path:
        """``archive_dir``, or ``home/archive`` when unset."""
        return self.archive_dir or self.home / "archive"

    @property
    def read_uri(self) -> str | None:
        return self.db_read_uri or self.db_uri

    def __repr__(self) -> str:
        fields = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ("db_uri", "db_read_uri", "broker_url"):
                v = mask_url(v)
            elif f.name in _SECRETS and v:
                v = "***"
            fields.append(f"{f.name}={v!r}")
        return f"Settings({', '.join(fields)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); ``overrides`` win (CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}

        def read(key: str, field: str, parse: Callable[[str], Any]) -> None:
            raw = env.get(key)
            if raw is None or raw == "":
                return
            try:
                values[field] = parse(raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(key, f"{exc} (got {mask_url(raw)!r})") from exc

        read("DB_URI", "db_uri", _url(_DB_SCHEMES))
        read("DB_READ_URI", "db_read_uri", _url(_DB_SCHEMES))
        read("CELERY_BROKER_URL", "broker_url", _url(_BROKER_SCHEMES))
        read("TTQUANT_HOME", "home", lambda s: Path(s).expanduser())
        read("MARKET", "market", str)
        read("EXCHANGE", "exchange", lambda s: s.strip().lower())
        read("TTQUANT_SYMBOLS", "symbols", _parse_symbols)
        read("ZMQ_PUB_ENDPOINT", "zmq_pub_endpoint", _zmq_endpoint)
        read("ZMQ_PULL_ENDPOINT", "zmq_pull_endpoint", _zmq_endpoint)
        read("ZMQ_TRADE_ENDPOINT", "zmq_trade_endpoint", _zmq_endpoint)
        read("TTQUANT_CHUNK_SIZE", "chunk_size", _positive_int)
        read("TTQUANT_CHUNK_AGE", "chunk_age", _positive_float)
        read("TTQUANT_ENQUEUE_QUEUE_MAX", "enqueue_queue_max", _positive_int)
        read("TTQUANT_PUBLISH_TIMEOUT", "publish_timeout", _positive_float)
        read("TTQUANT_RESEND_AFTER", "resend_after", _non_negative_float)
        read("TTQUANT_WRITE_RETRIES", "write_retries", _non_negative_int)
        read("TTQUANT_RETRY_BACKOFF_MAX", "retry_backoff_max", _positive_float)
        read("TTQUANT_MAX_DELIVERIES", "max_deliveries", _positive_int)
        read("TTQUANT_VISIBILITY_TIMEOUT", "visibility_timeout", _positive_int)
        read("TTQUANT_TASK_TIME_LIMIT", "task_time_limit", _positive_int)
        read("TTQUANT_LOG_LEVEL", "log_level", _log_level)
        read("TTQUANT_RISK_FILE", "risk_file", _existing_file)
        read("TTQUANT_MD_CONNECT", "md_connect", _zmq_endpoint)
        read("TTQUANT_EXECUTION", "execution", _choice("paper", "binance"))
        read("TTQUANT_PAPER_SLIPPAGE_BPS", "paper_slippage_bps", _bps)
        read("TTQUANT_PAPER_COMMISSION_BPS", "paper_commission_bps", _bps)
        read("BINANCE_API_KEY", "binance_api_key", str.strip)
        read("BINANCE_API_SECRET", "binance_api_secret", str.strip)
        read("BINANCE_ORDER_URL", "binance_order_url", _url(("https", "http")))
        read("BINANCE_REST_URL", "binance_rest_url", _url(("https", "http")))
        read("BINANCE_WS_URL", "binance_ws_url", _url(("wss", "ws")))
        read("TTQUANT_BACKFILL_MAX_IDS", "backfill_max_ids", _positive_int)
        read("TTQUANT_BINANCE_MAX_AGE", "binance_max_age", _positive_float)
        read("TTQUANT_BINANCE_STALE_AFTER", "binance_stale_after", _positive_float)
        read("TTQUANT_FLUSH_INTERVAL", "flush_interval", _positive_float)
        read("TTQUANT_PARTITIONS_INTERVAL", "partitions_interval", _positive_float)
        read("TTQUANT_RETENTION_INTERVAL", "retention_interval", _positive_float)
        read("TTQUANT_MARK_INTERVAL", "mark_interval", _positive_float)
        read("TTQUANT_KLINES_INTERVAL", "klines_interval", _positive_float)
        read("TTQUANT_METRICS_INTERVAL", "metrics_interval", _positive_float)
        read("TTQUANT_BACKUP_INTERVAL", "backup_interval", _positive_float)
        read("TTQUANT_BACKUP_DIR", "backup_dir", lambda s: Path(s).expanduser())
        read("TTQUANT_BACKUP_KEEP", "backup_keep", _positive_int)
        read("TTQUANT_ARCHIVE_DIR", "archive_dir", lambda s: Path(s).expanduser())
        read("TTQUANT_RETENTION_DAYS", "retention_days", _positive_int)
        read("TTQUANT_PARTITIONS_AHEAD", "partitions_ahead", _non_negative_int)
        for key, value in overrides.items():
            if key == "log_level" and value is not None:
                try:
                    value = _log_level(value)
                except ValueError as exc:
                    raise ConfigError("--log-level", str(exc)) from exc
            if value is not None:
                values[key] = value
        if values.get("execution") == "binance" and not (values.get("binance_api_key") and
                                                          values.get("binance_api_secret")):
            raise ConfigError("BINANCE_API_KEY",
                              "TTQUANT_EXECUTION=binance needs BINANCE_API_KEY and BINANCE_API_SECRET")
        if values.get("chunk_size", 1) > 5000:
            raise ConfigError("TTQUANT_CHUNK_SIZE", "at most 5000 ticks per chunk (broker message size)")
        return cls(**values)


def parse_symbols(raw: str, key: str = "--symbols") -> tuple[str, ...]:
    """Parse a comma-separated symbol list for a CLI flag; ConfigError names ``key``."""
    try:
        return _parse_symbols(raw)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from exc
