"""Alembic environment: plain SQL migrations run over SQLAlchemy's psycopg 3 driver."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by harvester.services.database"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            # Two crawls starting on a fresh database must not both create the schema:
            # the second waits here, then finds it current.
            connection.execute(text("SELECT pg_advisory_xact_lock(7468617276657374)"))
            context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
