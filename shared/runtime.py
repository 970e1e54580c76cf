"""The wiring every service repeats: settings, engine, sessions, outbox, inbox, Celery.

Everything is built lazily on first use so tests and the CLI can set the environment
before a service connects anywhere.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import redis
import structlog
from celery import Celery
from sqlalchemy import Engine, MetaData
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from shared import db, queues
from shared.celery_app import make_celery
from shared.events import Event
from shared.inbox import Handler, consume, inbox_table
from shared.logs import configure_logging
from shared.outbox import Outbox, leave_receipt, outbox_table
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)


class ServiceRuntime:
    def __init__(self, name: str, settings_factory: Callable[[], ServiceSettings], metadata: MetaData,
                 migrations_dir: Path):
        self.name = name
        self._settings_factory = settings_factory
        self.metadata = metadata
        self.migrations_dir = migrations_dir
        self.outbox_table = outbox_table(metadata)
        self.inbox_table = inbox_table(metadata)

    @cached_property
    def settings(self) -> ServiceSettings:
        return self._settings_factory()

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.settings.database_url)

    @cached_property
    def celery(self) -> Celery:
        return make_celery(self.name, self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.outbox_table, self.celery, producer=self.name)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        factory = db.make_sessionmaker(self.engine)
        self.outbox.relay_after_commit(factory)
        return factory

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with db.transaction(self.sessions) as session:
            yield session

    def get_session(self) -> Iterator[Session]:
        """FastAPI dependency: one session per request, closed afterwards."""
        session = self.sessions()
        try:
            yield session
        finally:
            session.close()

    def migrate(self) -> None:
        db.migrate(self.migrations_dir, self.settings.database_url)

    def reset_caches(self) -> None:
        """Forget settings, engine and Celery app (tests that change the environment)."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        for attr in ("settings", "engine", "celery", "outbox", "sessions", "redis"):
            self.__dict__.pop(attr, None)

    def register_event_task(self, handlers: dict[str, Handler]):
        """The thin Celery entrypoint that turns an event message into handler calls."""
        runtime = self

        @self.celery.task(name=queues.event_task(self.name), bind=True, acks_late=True,
                          autoretry_for=(OperationalError, ConnectionError), retry_backoff=2,
                          retry_backoff_max=120, retry_jitter=True, max_retries=10)
        def handle_event(task, body: dict) -> bool:
            event = Event.model_validate(body)
            structlog.contextvars.bind_contextvars(event_id=str(event.event_id), event_type=event.type)
            try:
                return runtime.handle(body, handlers, event=event)
            finally:
                structlog.contextvars.clear_contextvars()

        return handle_event

    def handle(self, body: dict, handlers: dict[str, Handler], *, event: Event | None = None) -> bool:
        """Process one event message and leave its receipt (what the worker task does)."""
        event = event or Event.model_validate(body)
        with self.sessions() as session:
            processed = consume(session, self.inbox_table, event, handlers)
        leave_receipt(self.redis, self.settings.redis_key_prefix, self.name, event.event_id)
        return processed

    def sweep_outbox(self) -> dict[str, int] | None:
        """The scheduler's job: send what is unsent, and again what no subscriber confirmed."""
        sent = self.outbox.sweep(self.sessions, older_than=dt.timedelta(seconds=1))
        checked = self.outbox.confirm(self.sessions, self.redis, prefix=self.settings.redis_key_prefix,
                                      resend_after=dt.timedelta(seconds=self.settings.outbox_resend_seconds))
        if sent or checked["resent"]:
            return {"sent": sent, **checked}
        return None


def run_periodic(jobs: list[tuple[str, float, Callable[[], object]]], *, stop_after: float | None = None) -> None:
    """Run each job every ``interval`` seconds until SIGTERM/SIGINT (the scheduler process)."""
    configure_logging()
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    next_run = {name: 0.0 for name, _, _ in jobs}
    started = time.monotonic()
    log.info("scheduler.started", jobs=[name for name, _, _ in jobs])
    while not stopping:
        now = time.monotonic()
        if stop_after is not None and now - started > stop_after:
            break
        for name, interval, fn in jobs:
            if now >= next_run[name]:
                try:
                    result = fn()
                    if result:
                        log.info("scheduler.job_done", job=name, result=result)
                except Exception as exc:
                    log.error("scheduler.job_failed", job=name, error=type(exc).__name__, message=str(exc)[:200])
                next_run[name] = time.monotonic() + interval
        time.sleep(0.2)
    log.info("scheduler.stopped")
