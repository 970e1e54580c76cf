"""Each service's Alembic history builds exactly the schema its models describe, on Postgres
and on SQLite, and can be walked back to nothing and up again."""

from __future__ import annotations

import importlib
import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from shared.db import alembic_config, migrate
from tests.support.servers import create_database, drop_database

SERVICES = ("directory", "referrals", "notifications")


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(request, tmp_path, postgres_admin_url):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/schema.db"
    name = f"fama_schema_{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: drop_database(postgres_admin_url, name))
    return create_database(postgres_admin_url, name)


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_build_the_models_schema(service, empty_database):
    runtime = importlib.import_module(f"services.{service}.runtime").runtime
    migrate(runtime.migrations_dir, empty_database)
    engine = create_engine(empty_database)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), runtime.metadata) == []
        command.downgrade(alembic_config(runtime.migrations_dir, empty_database), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate(runtime.migrations_dir, empty_database)
        assert set(runtime.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
