"""Procfile, docker compose and .env.example agree with each other and with the settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procfile import procfile

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "docker-compose.yml"
PROCESSES = {"feed", "gateway", "worker_ticks", "worker_orders", "worker_maintenance", "beat", "flower"}
COMPOSE_ENV = {"POSTGRES_PASSWORD": "test-password", "FLOWER_BASIC_AUTH": "admin:test-password"}


def compose_raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def container_command(service: dict[str, Any]) -> str:
    """The shell command a compose service runs, with compose's ``$$`` escape undone."""
    command = service["command"]
    assert isinstance(command, list) and command[:2] == ["sh", "-c"] and len(command) == 3, command
    return str(command[2]).replace("$$", "$")


def test_procfile_has_every_process() -> None:
    assert set(procfile()) == PROCESSES


def test_workers_split_ticks_from_orders() -> None:
    p = procfile()
    assert re.search(r"celery -A ttquant_tasks worker -Q ticks\s", p["worker_ticks"])
    # Orders alone on theirs: a long maintenance job (a backup runs for hours) never holds up an order write.
    assert re.search(r"celery -A ttquant_tasks worker -Q orders\s.* -c 1\s", p["worker_orders"])
    assert re.search(r"celery -A ttquant_tasks worker -Q maintenance\s.* -c 2 -O fair\s", p["worker_maintenance"])
    assert p["beat"].startswith("celery -A ttquant_tasks beat")
    # Task events on for Flower; distinct node names so both can run on one host.
    for name in ("worker_ticks", "worker_orders", "worker_maintenance"):
        assert " -E " in p[name] and " -n " in p[name]


def test_tick_workers_default_to_cores_plus_one_everywhere() -> None:
    from ttquant_tasks.commands import stack  # noqa: F401 - the CLI's defaults come from the same function
    from ttquant_tasks.settings import default_tick_concurrency

    # The Procfile's (and compose's, the same command) -c as the shell works it out, set and unset.
    flag = re.search(r"-c (\$\{TTQUANT_TICK_CONCURRENCY:-.*?\)\)\}) ", procfile()["worker_ticks"])
    assert flag is not None
    for env, expected in (({}, str(default_tick_concurrency())), ({"TTQUANT_TICK_CONCURRENCY": "1"}, "1")):
        shown = subprocess.run(["sh", "-c", f"echo {flag.group(1)}"], env={"PATH": "/usr/bin:/bin", **env},
                               capture_output=True, text=True, check=True).stdout.strip()
        assert shown == expected
    assert default_tick_concurrency() >= 2


def test_flower_is_bounded_and_authenticated() -> None:
    flower = procfile()["flower"]
    # `:?` makes the shell refuse to start Flower without credentials or a broker.
    check, sep, command = flower.partition(" && exec ")
    assert sep and re.search(r'"\$\{FLOWER_BASIC_AUTH:\?', check) and re.search(r'"\$\{CELERY_BROKER_URL:\?', check)
    # Not -A (Flower must not import the app); no secret on the command line: Celery reads the broker
    # URL from CELERY_BROKER_URL and Flower its password from FLOWER_BASIC_AUTH.
    assert command.startswith("celery flower ") and "--broker" not in command and "basic-auth" not in command
    assert "--max_tasks=10000" in command
    assert re.search(r"--address=\$\{FLOWER_ADDRESS:-127\.0\.0\.1\}", command)


def test_compose_runs_the_procfile_commands() -> None:
    services = compose_raw()["services"]
    assert set(services) >= PROCESSES
    assert {"db", "redis"} <= set(services)
    for name, command in procfile().items():
        assert container_command(services[name]) == command, name


def test_compose_services_have_healthchecks_and_restart_policies() -> None:
    services = compose_raw()["services"]
    # The x-app anchor is merged by the YAML loader, so every app service carries its keys.
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        assert "healthcheck" in service, name
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--maxmemory-policy noeviction" in redis_cmd and "--appendonly yes" in redis_cmd
    assert services["db"]["image"].startswith("timescale/timescaledb:")
    assert "./initdb:/docker-entrypoint-initdb.d:ro" in services["db"]["volumes"]
    assert services["flower"]["ports"] == ["127.0.0.1:5566:5566"]


def test_env_example_documents_every_setting() -> None:
    settings_src = (ROOT / "ttquant_tasks" / "settings.py").read_text()
    keys = set(re.findall(r'read\("([A-Z_]+)"', settings_src))
    assert keys, "no settings keys found: settings.py changed shape"
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^(?:# ?)?([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    assert keys - documented == set()
    used = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "Procfile").read_text()))
    assert used - documented == set()


def test_initdb_script_applies_the_timescale_flavour() -> None:
    script = (ROOT / "docker" / "initdb" / "10-ttquant-schema.sh").read_text()
    assert "grep -v '\\.plain\\.sql$'" in script and "'flavour', 'timescale'" in script
    assert "--single-transaction" in script and "ON_ERROR_STOP=1" in script


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), **COMPOSE_ENV}
    out = subprocess.run([*cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert PROCESSES | {"db", "redis"} == set(resolved["services"])
    assert resolved["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "admin:test-password"
    # Interpolation left the container-side variables alone (`$$` survives `config`).
    for name, command in procfile().items():
        assert container_command(resolved["services"][name]) == command, name


def test_docker_compose_refuses_a_missing_password(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "FLOWER_BASIC_AUTH": "a:b"}
    out = subprocess.run([*cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert out.returncode != 0 and "POSTGRES_PASSWORD" in out.stderr
