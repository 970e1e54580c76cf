"""SQLAlchemy 2.0 engine and session helpers, and the Alembic runner each service uses."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import DateTime, Engine, MetaData, TypeDecorator, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A naive datetime read as UTC (what UTCDateTime does for columns; for values that are not columns)."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class UTCDateTime(TypeDecorator):
    """An aware UTC datetime on every database (SQLite drops the offset; this restores it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return aware(value)

    def process_result_value(self, value, dialect):
        if value is not None:
            value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return value


def make_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING)


def is_sqlite(bind) -> bool:
    return bind.dialect.name == "sqlite"


def dialect_insert(dialect: str, target):
    """The database's own ``INSERT`` into ``target``, the one with ``on_conflict_do_nothing`` /
    ``on_conflict_do_update`` (``dialect``: PostgreSQL's, else SQLite's, the two FAMA runs on)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(target)


def make_engine(url: str, *, ping_after_idle: float | None = None, **kw) -> Engine:
    """An engine for ``url``: SQLite with WAL and BEGIN IMMEDIATE; Postgres with a pool whose
    connections are pinged only after ``ping_after_idle`` seconds idle (default
    PING_AFTER_IDLE_SECONDS; an explicit ``pool_pre_ping`` replaces that)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kw)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL lets the API, worker and scheduler processes read while one writes.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # BEGIN IMMEDIATE takes the write lock up front: two writers queue instead of
            # failing with "database is locked" half way through a transaction.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kw.setdefault("pool_size", 5)
    kw.setdefault("max_overflow", 10)
    if "pool_pre_ping" in kw:
        return create_engine(url, **kw)
    engine = create_engine(url, **kw)
    ping_when_idle(engine, PING_AFTER_IDLE_SECONDS if ping_after_idle is None else ping_after_idle)
    return engine


# A connection handed back to the pool less than this long ago was working a moment ago: it goes
# out without a ping. SQLAlchemy's pool_pre_ping pinged at every checkout, a round trip before
# every request's and every event's first statement (two of a new referral's fifteen).
PING_AFTER_IDLE_SECONDS = 1.0


def ping_when_idle(engine: Engine, seconds: float) -> None:
    """Ping a pooled connection before use only when it has been idle for ``seconds`` or more (a
    database restart or an idle timeout happens while connections sit in the pool); one the
    database dropped is replaced at once (DisconnectionError makes the pool connect anew)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy):
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < seconds:
            return  # just connected, or just used
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("the pooled connection no longer answers") from exc


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextlib.contextmanager
def unit_of_work(session: Session) -> Iterator[Session]:
    """Commit what the block did, or roll all of it back if it raised (and re-raise).

    The one way a request's work ends (api.py, pages.py): no hand-written commit()/rollback() at the edges."""
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    session.commit()


@contextlib.contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A new session whose work commits on success and rolls back on any error."""
    with factory() as session, unit_of_work(session):
        yield session


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def alembic_config(migrations_dir: Path, url: str):
    """Alembic's configuration for one service's scripts and database (no alembic.ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.attributes["database_url"] = url
    return cfg


def migrate(migrations_dir: Path, url: str, revision: str = "head") -> None:
    """Upgrade one service's database with its own Alembic scripts."""
    from alembic import command

    command.upgrade(alembic_config(migrations_dir, url), revision)


def run_alembic_env(metadata: MetaData, default_url: str) -> None:
    """Body of every service's ``migrations/env.py``."""
    from alembic import context

    url = context.config.attributes.get("database_url") or default_url
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
