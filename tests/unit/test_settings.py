from __future__ import annotations

from pathlib import Path

import pytest

from ttquant_tasks.errors import ConfigError
from ttquant_tasks.settings import Settings, mask_url


def test_defaults_match_ttquant() -> None:
    s = Settings.from_env({})
    assert (s.chunk_size, s.chunk_age) == (1000, 1.0)  # 1000: measured best (docs/benchmarks.md)
    assert s.zmq_pub_endpoint == "tcp://*:5555" and s.zmq_pull_endpoint == "tcp://*:5556"
    assert s.db_uri is None and s.broker_url is None


def test_values_are_parsed() -> None:
    s = Settings.from_env({"DB_URI": "postgresql://u:pw@h:5432/db", "CELERY_BROKER_URL": "amqp://g:g@h//",
                           "TTQUANT_HOME": "/tmp/x", "TTQUANT_SYMBOLS": " btcusdt, ethusdt ",
                           "TTQUANT_CHUNK_SIZE": "250", "TTQUANT_CHUNK_AGE": "0.5", "EXCHANGE": "OKX"})
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert s.chunk_size == 250 and s.chunk_age == 0.5 and s.home == Path("/tmp/x") and s.exchange == "okx"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TTQUANT_CHUNK_SIZE", "0"), ("TTQUANT_CHUNK_SIZE", "abc"), ("TTQUANT_CHUNK_SIZE", "100000"),
        ("TTQUANT_CHUNK_AGE", "-1"), ("TTQUANT_CHUNK_AGE", "nan"), ("DB_URI", "mysql://x"),
        ("CELERY_BROKER_URL", "http://x"), ("ZMQ_PUB_ENDPOINT", "5555"), ("TTQUANT_SYMBOLS", "BTC-USDT"),
        ("TTQUANT_SYMBOLS", ","), ("TTQUANT_WRITE_RETRIES", "-2"), ("TTQUANT_LOG_LEVEL", "LOUD"),
        ("TTQUANT_RESEND_AFTER", "-1"), ("TTQUANT_RESEND_AFTER", "inf"), ("TTQUANT_RESEND_AFTER", "soon"),
    ],
)
def test_bad_value_names_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({key: value})
    assert key in str(err.value)


def test_resend_after_zero_turns_confirmation_off() -> None:
    assert Settings.from_env({}).resend_after == 120.0
    assert Settings.from_env({"TTQUANT_RESEND_AFTER": "0"}).resend_after == 0.0


def test_visibility_timeout_must_exceed_time_limit() -> None:
    with pytest.raises(ConfigError, match="TTQUANT_VISIBILITY_TIMEOUT"):
        Settings.from_env({"TTQUANT_VISIBILITY_TIMEOUT": "100", "TTQUANT_TASK_TIME_LIMIT": "60"})


def test_passwords_print_masked() -> None:
    s = Settings.from_env({"DB_URI": "postgresql://trader:s3cret@db:5432/tt",
                           "CELERY_BROKER_URL": "redis://:hunter2@r:6379/0"})
    text = repr(s) + str(s)
    assert "s3cret" not in text and "hunter2" not in text and "trader:***@db:5432" in text
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_bad_value_error_masks_password() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"DB_URI": "mysql://u:topsecret@h/db"})
    assert "topsecret" not in str(err.value)
