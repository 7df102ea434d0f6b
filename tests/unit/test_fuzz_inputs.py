"""Bad input never escapes as a traceback: settings values and CLI arguments (hypothesis)."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttquant_tasks.cli import main
from ttquant_tasks.errors import ConfigError
from ttquant_tasks.settings import Settings

KEYS = ["DB_URI", "CELERY_BROKER_URL", "TTQUANT_SYMBOLS", "TTQUANT_CHUNK_SIZE", "TTQUANT_CHUNK_AGE",
        "TTQUANT_PUBLISH_TIMEOUT", "TTQUANT_WRITE_RETRIES", "TTQUANT_VISIBILITY_TIMEOUT", "TTQUANT_TASK_TIME_LIMIT",
        "ZMQ_PUB_ENDPOINT", "TTQUANT_LOG_LEVEL", "TTQUANT_PAPER_SLIPPAGE_BPS", "TTQUANT_EXECUTION", "EXCHANGE"]
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@given(st.dictionaries(st.sampled_from(KEYS), TEXT | st.sampled_from(["0", "-1", "nan", "inf", "1e9", "x://"])))
def test_settings_either_build_or_name_the_bad_key(env: dict[str, str]) -> None:
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        assert exc.key in KEYS or exc.key.startswith("TTQUANT_") or exc.key == "BINANCE_API_KEY"
        assert str(exc).startswith(exc.key)


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXT | st.sampled_from(["feed", "--rate", "--duration", "db", "init", "--flavour", "status",
                                        "services", "flush", "--limit", "--symbols", "-Q", "worker"]),
                max_size=5))
def test_cli_arguments_parse_or_exit_2(argv: list[str]) -> None:
    """Anything a user types either parses to a command or exits 2 with a usage message (parsing
    only: the commands themselves would start services)."""
    from ttquant_tasks import cli

    parser = cli.build_parser()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            assert exc.code in (0, 2)
            if exc.code == 2:
                assert "ttquant" in stderr.getvalue()
            return
    assert args.handler is not None


def test_main_reports_config_errors_without_traceback(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTQUANT_CHUNK_AGE", "soon")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "TTQUANT_CHUNK_AGE" in err and "Traceback" not in err
