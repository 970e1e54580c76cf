"""The wiring every service repeats: settings, engine, sessions, outbox, inbox, Celery.

Everything is built lazily on first use so tests and the CLI can set the environment
before a service connects anywhere.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import redis
import structlog
from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import Engine, MetaData
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from shared import db, queues
from shared.celery_app import make_celery
from shared.events import Event
from shared.inbox import Handler, claim_new, consume, inbox_table, refused
from shared.inbox import prune as prune_inbox
from shared.logs import configure_logging
from shared.metrics import count_refused, lag_commands, seconds_since
from shared.outbox import Outbox, outbox_table, receipt_commands
from shared.redis_client import redis_client
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

# What tasks retry on (with backoff): the database or the broker being unreachable.
RETRYABLE = (OperationalError, ConnectionError, BrokerError)


@contextmanager
def _event_log_context(event: Event) -> Iterator[None]:
    """Every log line while handling ``event`` carries its id and type."""
    structlog.contextvars.bind_contextvars(event_id=str(event.event_id), event_type=event.type)
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()


class ServiceRuntime:
    def __init__(self, name: str, settings_factory: Callable[[], ServiceSettings], metadata: MetaData,
                 migrations_dir: Path):
        self.name = name
        self._settings_factory = settings_factory
        self.metadata = metadata
        self.migrations_dir = migrations_dir
        self.outbox_table = outbox_table(metadata)
        self.inbox_table = inbox_table(metadata)
        self.batch_event_task = None  # set by register_event_task

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
        return redis_client(self.settings, timeout=5)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.outbox_table, self.celery, producer=self.name,
                      signing_keys=self.settings.event_keys()[self.name])

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        factory = db.make_sessionmaker(self.engine)
        self.outbox.relay_after_commit(factory)
        return factory

    @contextmanager
    def reads(self) -> Iterator[Session]:
        """A session that only reads. On Postgres its statements run in autocommit, each seeing what
        was committed when it ran: no BEGIN before them and no ROLLBACK to give the connection back
        (two of a public search's four round trips). Elsewhere, an ordinary session."""
        if self.engine.dialect.name != "postgresql":
            with self.sessions() as session:
                yield session
            return
        with Session(bind=self._autocommit_engine) as session:
            yield session

    @cached_property
    def _autocommit_engine(self) -> Engine:
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with db.transaction(self.sessions) as session:
            yield session

    async def get_session(self) -> AsyncIterator[Session]:
        """FastAPI dependency: one session per request, closed afterwards.

        ``async`` so that making and closing it costs no worker thread (a plain generator costs
        two, on top of the endpoint's): a new session is only an object until its first query.
        Only a session that still holds a connection when the endpoint is done (a read, or work
        after a commit) is closed in a thread, since handing the connection back is a round trip
        (a rollback) that must not stall the event loop."""
        session = self.sessions()
        try:
            yield session
        finally:
            if session.in_transaction():
                await run_in_threadpool(session.close)
            else:
                session.close()

    def migrate(self) -> None:
        db.migrate(self.migrations_dir, self.settings.database_url)

    def reset_caches(self) -> None:
        """Forget settings, engine and Celery app (tests that change the environment)."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        for attr in ("settings", "engine", "_autocommit_engine", "celery", "outbox", "sessions", "redis"):
            self.__dict__.pop(attr, None)

    def register_event_task(self, handlers: dict[str, Handler]):
        """The thin Celery entrypoints that turn event messages into handler calls: one event
        (``<service>.handle_event``, returned) and a batch of them (``<service>.handle_events``,
        also ``self.batch_event_task``), both registered on this service's Celery app."""
        runtime = self
        # shared=False: the tasks belong to this service's app only, not to every Celery app the
        # process creates later (Celery's default), where they would shadow that app's own.
        options = dict(bind=True, acks_late=True, autoretry_for=RETRYABLE, shared=False,
                       retry_backoff=2, retry_backoff_max=120, retry_jitter=True, max_retries=10)

        @self.celery.task(name=queues.event_task(self.name), **options)
        def handle_event(task, body: dict) -> bool:
            if runtime.refuses(body):
                return False  # acknowledged: a forgery must not come back
            event = Event.model_validate(body)
            with _event_log_context(event):
                return runtime.handle(body, handlers, event=event)

        @self.celery.task(name=queues.events_batch_task(self.name), **options)
        def handle_events(task, bodies: list[dict]) -> int:
            return runtime.handle_batch(bodies, handlers)

        self.batch_event_task = handle_events
        return handle_event

    def refuses(self, body: object) -> str | None:
        """Why this message from the broker is not an authentic event for this service, or None."""
        reason = refused(body, consumer=self.name, keys_of=self.settings.event_keys())
        if reason is not None:  # counted in Redis too: workers have no /metrics, the APIs read it there
            count_refused(self.redis, prefix=self.settings.redis_key_prefix, consumer=self.name, reason=reason)
        return reason

    def handle(self, body: dict, handlers: dict[str, Handler], *, event: Event | None = None) -> bool:
        """Process one (authentic: see ``refuses``) event and leave its receipt."""
        event = event or Event.model_validate(body)
        with self.sessions() as session:
            processed = consume(session, self.inbox_table, event, handlers)
        # The receipt and (for a new event) the inbox lag go to Redis in one round trip.
        prefix = self.settings.redis_key_prefix
        pipe = self.redis.pipeline(transaction=False)
        receipt_commands(pipe, prefix, self.name, event.event_id)
        if processed:
            lag_commands(pipe, prefix=prefix, consumer=self.name, seconds=seconds_since(event.occurred_at))
        try:
            pipe.execute()
        except redis.RedisError as exc:  # the producer will send again; the inbox absorbs it
            log.warning("outbox.receipt_failed", event_id=str(event.event_id), error=type(exc).__name__)
        return processed

    def handle_batch(self, bodies: list[dict], handlers: dict[str, Handler]) -> int:
        """Process a batch message. First all its events together: one transaction with every
        inbox row (one statement, skipping events already processed) and every handler's effects,
        then one round trip to Redis for all the receipts: an event still commits with its inbox
        row, only alongside the others. If anything in that fails, it is rolled back whole and each
        event is processed on its own, as ``handle`` does (own inbox transaction, own receipt): an
        event that fails does not stop the others; afterwards the first failure is raised (a
        retryable one first), so a database or broker error retries the batch, whose processed
        events the inbox then skips, and a poison event fails alone (``Outbox.confirm`` sends it
        again later). Returns the number of events newly processed."""
        errors: list[Exception] = []
        events: list[tuple[dict, Event]] = []
        for body in bodies:
            if self.refuses(body):
                continue  # logged and counted; the rest of the batch goes on
            try:
                events.append((body, Event.model_validate(body)))
            except Exception as exc:
                log.error("event.invalid_in_batch", error=type(exc).__name__)
                errors.append(exc)
        together = self._handle_together([event for _, event in events], handlers) if len(events) > 1 else None
        if together is not None:
            if errors:
                raise errors[0]
            return together
        processed = 0
        for body, event in events:
            with _event_log_context(event):
                try:
                    processed += self.handle(body, handlers, event=event)
                except Exception as exc:  # the type only: a message could quote personal data
                    log.error("event.failed_in_batch", error=type(exc).__name__)
                    errors.append(exc)
        if errors:
            raise next((e for e in errors if isinstance(e, RETRYABLE)), errors[0])
        return processed

    def _handle_together(self, events: list[Event], handlers: dict[str, Handler]) -> int | None:
        """A batch's events in one transaction and their receipts in one Redis round trip; the
        number newly processed, or None (nothing kept) if any of it failed."""
        unique = list({event.event_id: event for event in events}.values())
        try:
            with self.sessions() as session:
                new_ids = claim_new(session, self.inbox_table, unique)
                if new_ids is None:
                    return None
                new = [event for event in unique if event.event_id in new_ids]
                for event in new:
                    with _event_log_context(event):
                        handler = handlers.get(event.type)
                        if handler is not None:
                            handler(session, event)
                        else:
                            log.info("event.no_handler", event_type=event.type)
                session.commit()
        except Exception as exc:  # the type only: a message could quote personal data
            log.info("event.batch_one_by_one", events=len(unique), error=type(exc).__name__)
            return None
        for event in unique:
            if event.event_id in new_ids:
                log.info("event.processed", event_id=str(event.event_id), event_type=event.type)
            else:
                log.info("event.duplicate_ignored", event_id=str(event.event_id), event_type=event.type)
        prefix = self.settings.redis_key_prefix
        pipe = self.redis.pipeline(transaction=False)
        for event in unique:
            receipt_commands(pipe, prefix, self.name, event.event_id)
            if event.event_id in new_ids:
                lag_commands(pipe, prefix=prefix, consumer=self.name, seconds=seconds_since(event.occurred_at))
        try:
            pipe.execute()
        except redis.RedisError as exc:  # the producer will send again; the inbox absorbs it
            log.warning("outbox.receipt_failed", events=len(unique), error=type(exc).__name__)
        return len(new)

    def sweep_outbox(self) -> dict[str, int] | None:
        """The scheduler's job: send what is unsent, and again what no subscriber confirmed."""
        sent = self.outbox.sweep(self.sessions, older_than=dt.timedelta(seconds=1))
        checked = self.outbox.confirm(self.sessions, self.redis, prefix=self.settings.redis_key_prefix,
                                      resend_after=dt.timedelta(seconds=self.settings.outbox_resend_seconds))
        if sent or checked["resent"]:
            return {"sent": sent, **checked}
        return None


    def prune_events(self) -> dict[str, int] | None:
        """The scheduler's job: delete confirmed outbox rows and old inbox rows past their retention."""
        settings = self.settings
        outbox = self.outbox.prune(self.sessions, retention=dt.timedelta(days=settings.outbox_retention_days))
        inbox = prune_inbox(self.sessions, self.inbox_table, retention=dt.timedelta(days=settings.inbox_retention_days))
        return {"outbox": outbox, "inbox": inbox} if outbox or inbox else None

    def periodic_jobs(self) -> list[tuple[str, float, Callable[[], object]]]:
        """Every service scheduler's shared jobs: the outbox sweep and the event pruning."""
        settings = self.settings
        return [("outbox_sweep", settings.outbox_sweep_seconds, self.sweep_outbox),
                ("event_prune", settings.event_prune_seconds, self.prune_events)]


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
