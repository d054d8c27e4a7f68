"""Alembic environment: plain SQL migrations run over SQLAlchemy's psycopg 3 driver."""

from __future__ import annotations

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool, text

config = context.config


def run_migrations_online() -> None:
    conninfo = config.attributes.get("conninfo")
    assert conninfo, "the conninfo attribute must be set by harvester.services.database"
    # psycopg connects, as everywhere else: any libpq URL or key=value string works, which
    # SQLAlchemy's own URL parser would not all accept.
    engine = create_engine("postgresql+psycopg://", poolclass=pool.NullPool,
                           creator=lambda: psycopg.connect(conninfo, connect_timeout=10))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            # Two crawls starting on a fresh database must not both create the schema:
            # the second waits here, then finds it current.
            connection.execute(text("SELECT pg_advisory_xact_lock(7468617276657374)"))
            context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(dialect_name="postgresql", literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
