"""One migration history for PostgreSQL and SQLite, and it matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

import clearing.app.tables  # noqa: F401
from clearing.core.db import Base


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # The scheduler's job table belongs to APScheduler, not to our models.
    differences = [d for d in differences if "settlement_scheduler_jobs" not in str(d)]
    assert differences == []
