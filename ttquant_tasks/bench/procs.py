"""Subprocesses of a bench run (Celery worker, gateway, instrumented feed) and their CPU time.

Each runs with an explicit environment (private DB_URI, CELERY_BROKER_URL, TTQUANT_HOME and
loopback ZMQ endpoints), logs to a file under the run's directory, and is stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from .workerproc import READY


class Proc:
    """A subprocess started with ``argv`` and ``env``; ready when ``ready_text`` appears in its log."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, ready_text: str | None) -> None:
        self.argv = argv
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.ready_text = ready_text
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        if self.ready_text is None:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[2:5]} exited with {self.proc.returncode}:\n{self.log()[-2000:]}")
            if self.ready_text in self.log():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.argv[2:5]} not ready after {timeout}s:\n{self.log()[-2000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process and its live children so far."""
        assert self.proc is not None
        total = 0.0
        try:
            main = psutil.Process(self.proc.pid)
            for p in [main, *main.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            pass
        return total

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait(10)


def worker(env: dict[str, str], log_dir: Path, concurrency: int = 2, queues: str = "ticks") -> Proc:
    """A Celery worker on ``queues``, prefork pool, ``concurrency`` children (not started).

    As ``ttquant up`` runs them: ticks on one worker, orders on their own (1 child), so an order never
    waits behind a busy tick chunk, and maintenance on a third where the outage phase needs it.  The
    end-to-end phase's ticks worker has the 2 children the issue sets; the outage phase's has
    ``ttquant up``'s default (cores + 1).
    """
    name = f"bench-{queues.split(',')[0]}-{uuid.uuid4().hex[:6]}"
    argv = [sys.executable, "-m", "ttquant_tasks.bench.workerproc", "-Q", queues,
            "-c", str(concurrency), "-P", "prefork", "--loglevel", "WARNING", "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair"]
    return Proc(argv, env, log_dir / f"worker-{name}.log", ready_text=READY)


def gateway(env: dict[str, str], log_dir: Path) -> Proc:
    """``ttquant gateway`` (paper venue, packaged risk limits; not started)."""
    argv = [sys.executable, "-m", "ttquant_tasks.cli", "--log-level", "INFO", "gateway"]
    return Proc(argv, env, log_dir / f"gateway-{uuid.uuid4().hex[:6]}.log", ready_text="gateway: orders on")


def run_feed_child(env: dict[str, str], log_dir: Path, config: dict[str, Any], timeout: float,
                   module: str = "ttquant_tasks.bench.feedproc") -> dict[str, Any]:
    """Run :mod:`.feedproc` (or another child ``module`` of the same protocol) to completion;
    returns the JSON it prints as its last stdout line."""
    argv = [sys.executable, "-m", module, json.dumps(config)]
    log_path = log_dir / f"feed-{config.get('exchange', 'x')}.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        done = subprocess.run(argv, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=log,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench feed exited {done.returncode}; see {log_path}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def start_feed_child(env: dict[str, str], log_dir: Path, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start :mod:`.feedproc` in the background; read its result with :func:`feed_result`."""
    argv = [sys.executable, "-m", "ttquant_tasks.bench.feedproc", json.dumps(config)]
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"feed-{config.get('exchange', 'x')}.log", "ab") as log:
        return subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=log,
                                stdin=subprocess.DEVNULL)


def feed_result(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench feed exited {proc.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
