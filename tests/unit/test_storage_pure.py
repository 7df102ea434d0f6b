"""Pure parts of the storage package: URLs, error translation, migration planning, CSV/JSON shaping."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import multiprocessing
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy.exc as saexc

from ttquant_tasks.errors import ConfigError, DatabaseUnavailable, PermanentError, is_retryable
from ttquant_tasks.models import Tick
from ttquant_tasks.storage import engine as engine_mod
from ttquant_tasks.storage.engine import db_errors, get_engine, sqlalchemy_url, translate_error
from ttquant_tasks.storage.migrate import (
    FLAVOURS,
    SQL_DIR,
    Migration,
    discover,
    parse_filename,
    pending,
    resolve_flavour,
    select,
)
from ttquant_tasks.storage.writers import dead_letter_json, ticks_csv

# --- engine ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("uri", "expected"), [
    ("postgresql://u:p@h:5432/db", "postgresql+psycopg2://u:p@h:5432/db"),
    ("postgres://u@h/db", "postgresql+psycopg2://u@h/db"),
    ("postgresql+psycopg2://h/db", "postgresql+psycopg2://h/db"),
])
def test_sqlalchemy_url_names_the_driver(uri: str, expected: str) -> None:
    assert sqlalchemy_url(uri) == expected


@pytest.mark.parametrize("uri", [None, "", "mysql://h/db", "h:5432/db", "sqlite:///x"])
def test_sqlalchemy_url_refuses_other_schemes(uri: str | None) -> None:
    with pytest.raises(ConfigError, match="DB_URI"):
        sqlalchemy_url(uri)


def test_get_engine_is_one_per_process_and_uri() -> None:
    a = get_engine("postgresql://u@127.0.0.1:1/x")
    assert get_engine("postgres://u@127.0.0.1:1/x") is a  # same database, other spelling
    assert get_engine("postgresql://u@127.0.0.1:1/y") is not a


def _child_gets_own_engine(parent_id: int, out: multiprocessing.Queue[bool]) -> None:
    out.put(id(get_engine("postgresql://u@127.0.0.1:1/x")) != parent_id and not any(
        pid != __import__("os").getpid() for pid, _ in engine_mod._engines))


def test_forked_child_drops_inherited_engines() -> None:
    parent = get_engine("postgresql://u@127.0.0.1:1/x")
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[bool] = ctx.Queue()
    p = ctx.Process(target=_child_gets_own_engine, args=(id(parent), out))
    p.start()
    assert out.get(timeout=60) is True
    p.join(60)
    assert get_engine("postgresql://u@127.0.0.1:1/x") is parent


@pytest.mark.parametrize(("exc", "kind"), [
    (psycopg2.OperationalError("could not connect"), DatabaseUnavailable),
    (psycopg2.InterfaceError("connection already closed"), DatabaseUnavailable),
    (saexc.OperationalError("SELECT 1", {}, psycopg2.OperationalError("server closed")), DatabaseUnavailable),
    (saexc.TimeoutError("QueuePool limit"), DatabaseUnavailable),
    (psycopg2.DataError("invalid input syntax for type numeric"), PermanentError),
    (psycopg2.IntegrityError("null value in column"), PermanentError),
    (saexc.IntegrityError("INSERT", {}, psycopg2.IntegrityError("dup")), PermanentError),
])
def test_driver_errors_are_classified(exc: Exception, kind: type[Exception]) -> None:
    ours = translate_error(exc, "op")
    assert isinstance(ours, kind) and str(ours).startswith("op: ")
    assert is_retryable(ours) == (kind is DatabaseUnavailable)


@pytest.mark.parametrize("exc", [
    psycopg2.ProgrammingError("relation does not exist"), ValueError("x"), DatabaseUnavailable("already ours"),
])
def test_other_errors_pass_through(exc: Exception) -> None:
    assert translate_error(exc, "op") is None


def test_db_errors_chains_the_driver_exception() -> None:
    original = psycopg2.OperationalError("boom\nDETAIL: more")
    with pytest.raises(DatabaseUnavailable, match=r"^w: database unavailable: boom$") as info, db_errors("w"):
        raise original
    assert info.value.__cause__ is original
    with pytest.raises(KeyError), db_errors("w"):
        raise KeyError("not a database error")


# --- migration planning ----------------------------------------------------------------------


def m(version: int, name: str, flavour: str | None = None) -> Migration:
    suffix = f".{flavour}" if flavour else ""
    return Migration(version, f"{version:03d}_{name}", Path(f"{version:03d}_{name}{suffix}.sql"), flavour)


def test_parse_filename() -> None:
    parsed = parse_filename(Path("/x/002_market_data.plain.sql"))
    assert (parsed.version, parsed.name, parsed.flavour) == (2, "002_market_data", "plain")
    assert parse_filename(Path("001_init.sql")) == m(1, "init")
    for bad in ("1_init.sql", "001-init.sql", "001_init.txt", "001_Init.sql"):
        with pytest.raises(ConfigError, match="expected NNN_name"):
            parse_filename(Path(bad))
    with pytest.raises(ConfigError, match="unknown flavour 'mysql'"):
        parse_filename(Path("003_x.mysql.sql"))


def test_select_picks_common_or_flavour_file() -> None:
    files = [m(1, "init"), m(2, "md", "plain"), m(2, "md", "timescale")]
    assert [f.flavour for f in select(files, "plain")] == [None, "plain"]
    assert [f.flavour for f in select(files, "timescale")] == [None, "timescale"]


@pytest.mark.parametrize(("files", "message"), [
    ([m(1, "init"), m(3, "x")], "without gaps"),
    ([m(2, "x")], "without gaps"),
    ([m(1, "init"), m(1, "init", "plain")], "one common file or one per flavour"),
    ([m(1, "init", "plain")], "one common file or one per flavour"),
    ([m(1, "a", "plain"), m(1, "b", "timescale")], "disagree on the name"),
])
def test_select_refuses_inconsistent_sets(files: list[Migration], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        select(files, "plain")


def test_pending_applies_only_missing_versions_up_to_target() -> None:
    ms = [m(1, "init"), m(2, "md"), m(3, "maint")]
    assert [x.version for x in pending(ms, {})] == [1, 2, 3]
    assert [x.version for x in pending(ms, {1: "001_init"})] == [2, 3]
    assert [x.version for x in pending(ms, {1: "001_init"}, target=2)] == [2]
    assert pending(ms, {1: "001_init", 2: "002_md", 3: "003_maint"}) == []
    with pytest.raises(PermanentError, match="newer than this code"):
        pending(ms, {4: "004_future"})
    with pytest.raises(PermanentError, match="applied as '002_other'"):
        pending(ms, {2: "002_other"})
    with pytest.raises(ConfigError, match="does not exist"):
        pending(ms, {}, target=7)


@pytest.mark.parametrize(("requested", "recorded", "available", "expected"), [
    ("auto", None, True, "timescale"),
    ("auto", None, False, "plain"),
    ("plain", None, True, "plain"),
    ("timescale", None, True, "timescale"),
    ("auto", "plain", True, "plain"),
    ("plain", "plain", True, "plain"),
    ("auto", "timescale", False, "timescale"),
])
def test_resolve_flavour(requested: str, recorded: str | None, available: bool, expected: str) -> None:
    assert resolve_flavour(requested, recorded, lambda: available) == expected


@pytest.mark.parametrize(("requested", "recorded", "available", "message"), [
    ("timescale", None, False, "not installable"),
    ("timescale", "plain", True, "cannot switch"),
    ("TimescaleDB", None, True, "expected one of"),
])
def test_resolve_flavour_refuses(requested: str, recorded: str | None, available: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_flavour(requested, recorded, lambda: available)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_shipped_sql_is_complete_for_each_flavour(flavour: str) -> None:
    chosen = discover(flavour)
    assert [x.version for x in chosen] == list(range(1, len(chosen) + 1)) and len(chosen) >= 3
    text = "\n".join(x.sql() for x in chosen)
    for fn in ("ttquant_ensure_day", "ttquant_ensure_partitions", "ttquant_drop_partitions"):
        assert f"CREATE FUNCTION {fn}(" in text  # the writer and maintenance call them in both flavours
    assert "DROP TABLE market_data" not in text
    assert SQL_DIR.is_dir()


# --- writers ---------------------------------------------------------------------------------


def test_ticks_csv_keeps_exact_strings_and_nulls() -> None:
    ticks = [
        Tick("binance", "BTCUSDT", 1, "64321.12345678", "0.00012345", 10, 11, True),
        Tick("binance", 'A,"B"\nC', 2, "1E-8", "0", 12, 13, None),
        Tick("okx", "ETH", 3, "1", "2", 14, 15, False),
    ]
    text = ticks_csv(ticks)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["binance", "BTCUSDT", "1", "64321.12345678", "0.00012345", "10", "11", "t"]
    assert rows[1] == ["binance", 'A,"B"\nC', "2", "1E-8", "0", "12", "13", ""]
    assert rows[2][-1] == "f"
    assert ",12,13,\nokx," in text  # unquoted empty field: COPY reads it as NULL
    assert ticks_csv([]) == ""


def test_dead_letter_json_never_fails_on_odd_payloads() -> None:
    text = dead_letter_json({"a": "x\x00y", "b": b"raw", "c": [1.5, None]})
    assert "\\u0000" not in text
    back = json.loads(text)
    assert back["a"] == "x\ufffdy" and back["b"] == "b'raw'" and back["c"] == [1.5, None]


def test_utc_days_of_a_chunk_once_each_in_order() -> None:
    from ttquant_tasks.storage.writers import utc_days

    day = 86_400 * 10**9
    got = utc_days([5 * day + 10, 0, day - 1, day, 5 * day])
    assert got == [dt.date(1970, 1, 1), dt.date(1970, 1, 2), dt.date(1970, 1, 6)]
    assert utc_days([1_732_540_000_123_456_789]) == [dt.date(2024, 11, 25)]
