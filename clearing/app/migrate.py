"""Run the Alembic migrations programmatically (no alembic.ini at the top level), and check that a
database is at the code's revision before a command uses it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE_HINT = "run `clearing db upgrade`"


class SchemaNotCurrent(Exception):
    """The database is not at the revision this code needs; the message says what to do."""


def alembic_config(url: str) -> Config:
    """An Alembic configuration pointing at our migrations and `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database of `engine` to `revision`."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(""))


def head_revision(scripts: ScriptDirectory | None = None) -> str:
    """The latest revision of the migration history shipped with this code."""
    head = (scripts or _scripts()).get_current_head()
    assert head is not None, "the migration history is empty"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database of `engine` is at; None when it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def ensure_current(engine: Engine) -> None:
    """Make sure the database is at the code's head revision before a command uses it.

    An embedded SQLite database is migrated on the spot (there is no operator to ask, and a
    newcomer's commands then work in any order). On PostgreSQL an un-migrated or older database
    raises SchemaNotCurrent, whose one-line message says to run `clearing db upgrade`: migrating
    a shared database is the operator's decision. A database at a revision this code does not
    know (a newer version of the platform migrated it) is never touched.
    """
    scripts = _scripts()
    head = head_revision(scripts)
    current = current_revision(engine)
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
        raise SchemaNotCurrent(
            f"the database {where} is at revision {current}, which this code does not know"
            f" (its latest is {head}): it was migrated by a newer version of the platform"
        )
    if engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    state = "has no schema yet" if current is None else f"is at revision {current}, not {head}"
    raise SchemaNotCurrent(f"the database {where} {state}: {UPGRADE_HINT}")
