"""Real service processes for integration and end-to-end tests: Celery workers, schedulers, APIs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], object], *, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll until ``predicate()`` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class ServiceProcess:
    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None, ready_text: str | None = None):
        self.name = name
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.ready_text = ready_text
        self.log_path = Path(tempfile.mkdtemp(prefix="fama-proc-")) / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if self.ready_text:
            wait_for(lambda: self.ready_text in self.log() or self.proc.poll() is not None, timeout=timeout,
                     what=f"{self.name} to start")
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log()[-3000:]}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group at once (kill -9 of a worker and its pool)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()


def celery_worker(service: str, queues: list[str] | None = None, *, concurrency: int = 1,
                  env: dict[str, str] | None = None, pool: str = "prefork") -> ServiceProcess:
    queues = queues or [f"{service}.events"]
    name = f"{service}-{uuid.uuid4().hex[:6]}"
    args = [sys.executable, "-m", "celery", "-A", f"services.{service}.tasks", "worker", "-Q", ",".join(queues),
            "-c", str(concurrency), "-P", pool, "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO"]
    return ServiceProcess(name, args, env=env, ready_text="ready.")


def scheduler(service: str, env: dict[str, str] | None = None) -> ServiceProcess:
    args = [sys.executable, "-m", "fama.cli", service, "scheduler"]
    return ServiceProcess(f"{service}-scheduler", args, env=env, ready_text="scheduler.started")


def api_server(service: str, port: int, env: dict[str, str] | None = None, serve: tuple[str, ...] = ()) -> ServiceProcess:
    """uvicorn serving the service's API; ``serve``: more uvicorn options (the benchmarks give the production ones)."""
    args = [sys.executable, "-m", "uvicorn", f"services.{service}.api:app", "--host", "127.0.0.1", "--port", str(port),
            *serve]
    return ServiceProcess(f"{service}-api", args, env=env, ready_text="Application startup complete")
