"""The whole of FAMA as real processes: three APIs, their workers, the sender and the schedulers.

Used by the browser tests, the chaos suite and the end-to-end benchmarks. The processes
use this test run's databases and Redis key space (set in tests/conftest.py).
"""

from __future__ import annotations

import socket

import httpx

from tests.support.processes import ServiceProcess, api_server, celery_worker, scheduler, wait_for

SERVICES = ("directory", "referrals", "notifications")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, env: dict[str, str] | None = None, *, sender_concurrency: int = 2, serve: tuple[str, ...] = ()):
        self.ports = {name: free_port() for name in SERVICES}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.env = {
            "DIRECTORY_PUBLIC_URL": self.urls["directory"],
            "REFERRALS_PUBLIC_URL": self.urls["referrals"],
            "NOTIFICATIONS_PUBLIC_URL": self.urls["notifications"],
            **(env or {}),
        }
        self.sender_concurrency = sender_concurrency
        self.serve = serve  # more uvicorn options for the APIs
        self.processes: dict[str, ServiceProcess] = {}

    def _spec(self, name: str) -> ServiceProcess:
        service, _, role = name.partition("-")
        if role == "api":
            return api_server(service, self.ports[service], env=self.env, serve=self.serve)
        if role == "worker":
            return celery_worker(service, env=self.env)
        if role == "sender":
            return celery_worker("notifications", ["notifications.send"], env=self.env,
                                 concurrency=self.sender_concurrency)
        if role == "scheduler":
            return scheduler(service, env=self.env)
        raise ValueError(name)

    NAMES = tuple(f"{s}-{r}" for s in SERVICES for r in ("api", "worker", "scheduler")) + ("notifications-sender",)

    def start(self, names: tuple[str, ...] | None = None) -> Stack:
        for name in names or self.NAMES:
            self.processes[name] = self._spec(name).start(timeout=60)
        for service in SERVICES:
            if f"{service}-api" in self.processes:
                wait_for(lambda s=service: _ready(self.urls[s]), timeout=30, what=f"{service} API ready")
        return self

    def restart(self, name: str) -> ServiceProcess:
        old = self.processes.get(name)
        if old is not None:
            old.stop()
        self.processes[name] = self._spec(name).start(timeout=60)
        return self.processes[name]

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {n}\n{p.log()}" for n, p in self.processes.items())


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
