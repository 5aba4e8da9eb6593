"""Alembic environment: one history for PostgreSQL and SQLite."""

from __future__ import annotations

from alembic import context

import clearing.app.tables  # noqa: F401  (registers every package's models on the metadata)
from clearing.core.db import Base, make_engine

config = context.config
connection = config.attributes.get("connection")


def run() -> None:
    """Run migrations on the given connection, or on a new engine for the configured URL."""
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
