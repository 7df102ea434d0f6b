"""A real ``celery -A ttquant_tasks worker`` subprocess for tests (so it can be SIGKILLed).

Spawning, the ready wait, the log and the stop are the bench's :class:`~ttquant_tasks.bench.procs.Proc`;
this adds what fault tests need: the pool children, killing one of them, killing the whole worker.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import psutil

from ttquant_tasks.bench.procs import Proc


class WorkerProcess(Proc):
    """Spawn, wait for ready, kill (whole worker or one pool child), stop.  Log in ``log_path``."""

    def __init__(self, env: dict[str, str], log_dir: Path, queues: str = "ticks,orders,maintenance",
                 concurrency: int = 1, pool: str = "prefork") -> None:
        self.name = f"test-{uuid.uuid4().hex[:6]}"
        argv = [sys.executable, "-m", "celery", "-A", "ttquant_tasks", "worker", "-Q", queues,
                "-c", str(concurrency), "-P", pool, "--loglevel", "INFO",
                "-n", f"{self.name}@%h", "--without-gossip", "--without-mingle", "-O", "fair"]
        super().__init__(argv, env, log_dir / f"worker-{self.name}.log", ready_text=" ready.")

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        super().start(timeout)
        return self

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
