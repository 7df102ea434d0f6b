"""A real ``celery -A ttquant_tasks worker`` subprocess for tests (so it can be SIGKILLed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil


class WorkerProcess:
    """Spawn, wait for ready, kill (whole worker or one pool child), stop.  Log in ``log_path``."""

    def __init__(self, env: dict[str, str], log_dir: Path, queues: str = "ticks,orders,maintenance",
                 concurrency: int = 1, pool: str = "prefork") -> None:
        self.env = {**os.environ, **env}
        self.queues = queues
        self.concurrency = concurrency
        self.pool = pool
        self.name = f"test-{uuid.uuid4().hex[:6]}"
        self.log_path = log_dir / f"worker-{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        argv = [sys.executable, "-m", "celery", "-A", "ttquant_tasks", "worker", "-Q", self.queues,
                "-c", str(self.concurrency), "-P", self.pool, "--loglevel", "INFO",
                "-n", f"{self.name}@%h", "--without-gossip", "--without-mingle", "-O", "fair"]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if " ready." in self.log():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def children(self) -> list[psutil.Process]:
        assert self.proc is not None
        try:
            return psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []

    def kill_child(self) -> int:
        """SIGKILL one pool child (the task it runs is lost by the pool -> redelivered)."""
        kids = self.children()
        assert kids, "worker has no pool children"
        kids[0].kill()
        return kids[0].pid

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children)."""
        if self.proc is None:
            return
        for child in self.children():
            child.kill()
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()
