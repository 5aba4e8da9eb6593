"""Database engine, metadata and the one-transaction-per-operation session scope."""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
from psycopg import pq
from psycopg.rows import namedtuple_row
from psycopg.types.json import Json
from sqlalchemy import (
    JSON,
    BigInteger,
    Dialect,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    create_engine,
    event,
    insert,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from clearing.core.errors import ClearingError

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY, so 64-bit keys are INTEGER there.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC on PostgreSQL; text on SQLite, whose NUMERIC would round-trip through a float."""

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int = 24, scale: int = 12) -> None:
        super().__init__(precision, scale)
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> object:
        if value is None or dialect.name != "sqlite":
            return value
        return str(Decimal(value))

    def process_result_value(self, value: object, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class Base(DeclarativeBase):
    """Declarative base shared by every package's models: one metadata, one migration history."""

    metadata = MetaData(naming_convention=NAMING)


def is_postgres(engine_or_session: Engine | Session) -> bool:
    """Whether this engine or session talks to PostgreSQL."""
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "postgresql"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and writer-first transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    if parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    kwargs.setdefault("pool_size", 16)
    kwargs.setdefault("max_overflow", 16)
    return create_engine(url, pool_pre_ping=False, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, open transactions, so that we can open them as writers.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # BEGIN IMMEDIATE takes the write lock up front: two writers never both read then
        # fail to upgrade, which is SQLite's version of a lost update.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commits if the block succeeds, rolls everything back if it raises.

    An error that carries `kept` writes (a risk decision, a pending review) has them written
    after the rollback, in a transaction of their own on the same engine, then goes on.
    """
    with Session(engine, expire_on_commit=False) as session:
        try:
            with session.begin():
                yield session
        except ClearingError as error:
            if error.kept is not None:
                with Session(engine, expire_on_commit=False) as fresh, fresh.begin():
                    error.kept(fresh)
            raise


Params = Mapping[str, Any]
_PG_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


class Sql:
    """A statement built once, at import: on PostgreSQL it runs straight on the driver, prepared.

    SQLAlchemy's per-execution work (coercion, cache keys, result metadata) costs several times
    what the database spends on a short ledger statement, so the hot paths compile their
    statements once and hand them to psycopg. SQLite keeps the ordinary SQLAlchemy path. Rows
    come back as named tuples on both.
    """

    __slots__ = ("_columns", "_defaults", "_pg", "statement")

    def __init__(self, statement: Executable, columns: Sequence[str] = ()) -> None:
        """`columns`: for an INSERT without values, the columns its parameters give."""
        self.statement = statement
        self._columns = list(columns)
        self._pg: str | None = None
        self._defaults: dict[str, Any] = {}

    @classmethod
    def composed(cls, template: str, *parts: Sql) -> Sql:
        """A PostgreSQL-only statement that embeds compiled statements: `{0}`, `{1}`... in
        `template` are replaced by the parts, whose parameter names must not collide."""
        composite = cls(text(""))
        composite._pg = template.format(*(part._pg_sql() for part in parts))
        for part in parts:
            assert not composite._defaults.keys() & part._defaults.keys()
            composite._defaults.update(part._defaults)
        return composite

    def _pg_sql(self) -> str:
        if self._pg is None:
            assert isinstance(self.statement, ClauseElement)
            compiled = self.statement.compile(
                dialect=_PG_DIALECT, column_keys=self._columns or None
            )
            # Literals in the statement (slot = 0, held >= 0) become parameters with a value.
            self._defaults = {
                name: bind.effective_value
                for name, bind in compiled.binds.items()  # type: ignore[attr-defined]
                if not bind.required
            }
            self._pg = str(compiled)
        return self._pg

    def _params(self, params: Params | None) -> dict[str, Any]:
        merged = {**self._defaults, **(params or {})}
        # JSON columns are the only values psycopg does not adapt by itself.
        return {k: Json(v) if isinstance(v, dict) else v for k, v in merged.items()}

    def rows(self, session: Session, params: Params | None = None) -> list[Any]:
        """Execute and return every row (none for a statement without RETURNING)."""
        connection = session.connection()
        if connection.dialect.name != "postgresql":
            result = session.execute(self.statement, dict(params or {}))
            return list(result.all()) if result.returns_rows else []  # type: ignore[attr-defined]
        cursor = _cursor(connection)
        sql = self._pg_sql()
        try:
            cursor.execute(sql, self._params(params), prepare=True)
            outcome = cursor.pgresult
            if outcome is None or outcome.status != pq.ExecStatus.TUPLES_OK:
                return []
            return cursor.fetchall()
        except psycopg.Error as error:
            raise _wrapped(sql, error) from error

    def first(self, session: Session, params: Params | None = None) -> Any | None:
        """The first row, or None."""
        found = self.rows(session, params)
        return found[0] if found else None

    def first_committed(self, engine: Engine, params: Params) -> Any | None:
        """Run in a transaction of its own and return the first row, if any. On PostgreSQL that
        is one statement in autocommit: one round trip, without BEGIN and COMMIT."""
        if engine.dialect.name != "postgresql":
            with engine.begin() as conn:
                result = conn.execute(self.statement, dict(params))
                return result.first() if result.returns_rows else None
        pooled = engine.raw_connection()
        driver = cast(psycopg.Connection[Any], pooled.driver_connection)
        sql = self._pg_sql()
        try:
            driver.autocommit = True
            try:
                with driver.cursor(row_factory=namedtuple_row) as cursor:
                    cursor.execute(sql, self._params(params), prepare=True)
                    outcome = cursor.pgresult
                    if outcome is None or outcome.status != pq.ExecStatus.TUPLES_OK:
                        return None
                    return cursor.fetchone()
            finally:
                if not driver.broken:
                    driver.autocommit = False
        except psycopg.Error as error:
            if driver.broken:
                pooled.invalidate()
            raise _wrapped(sql, error) from error
        finally:
            pooled.close()

    def run_many(self, session: Session, params: Sequence[Params]) -> None:
        """Execute once per parameter set, without rows back."""
        if not params:
            return
        connection = session.connection()
        if connection.dialect.name != "postgresql":
            session.execute(self.statement, [dict(p) for p in params])
            return
        sql = self._pg_sql()
        try:
            if len(params) == 1:
                # executemany enters pipeline mode: worth it for many rows, not for one.
                _cursor(connection).execute(sql, self._params(params[0]), prepare=True)
            else:
                _cursor(connection).executemany(sql, [self._params(p) for p in params])
        except psycopg.Error as error:
            raise _wrapped(sql, error) from error


def _cursor(connection: Connection) -> psycopg.Cursor[Any]:
    """One cursor per pooled connection, kept with it (a new cursor costs as much as a query)."""
    pooled = connection.connection
    cursor = pooled.info.get("clearing_cursor")
    if cursor is None or cursor.closed:
        raw = cast(psycopg.Connection[Any], pooled.driver_connection)
        cursor = pooled.info["clearing_cursor"] = raw.cursor(row_factory=namedtuple_row)
    return cast(psycopg.Cursor[Any], cursor)


T = TypeVar("T")


@functools.cache
def _getter(cls: type[Any], prefix: str) -> Callable[[Any], tuple[Any, ...]]:
    return operator.attrgetter(*(prefix + f.name for f in dataclasses.fields(cls)))


def row_to(cls: type[T], row: Any, prefix: str = "") -> T:
    """The dataclass `cls` made of a row's columns named like its fields (after `prefix`)."""
    return cls(*_getter(cast(Any, cls), prefix)(row))


_SQLITE_CHECK = re.compile(r"CHECK constraint failed: (\w+)")


def violated_constraint(error: DBAPIError) -> str | None:
    """The name of the constraint a database error says was violated, else None.

    The one place that reads it: psycopg reports it as `diag.constraint_name` (also for a
    statement inside a PL/pgSQL function); SQLite offers it only inside its message, and only
    for CHECK constraints ("CHECK constraint failed: <name>").
    """
    orig = error.orig
    if isinstance(orig, psycopg.Error):
        return orig.diag.constraint_name
    if isinstance(orig, sqlite3.Error):
        match = _SQLITE_CHECK.search(str(orig))
        return match.group(1) if match else None
    return None


def _wrapped(sql: str, error: psycopg.Error) -> StatementError:
    # The same exception classes as through SQLAlchemy (IntegrityError, OperationalError...),
    # so callers and the API's error handlers see one behaviour; parameters are never shown.
    return DBAPIError.instance(sql, None, error, psycopg.Error, hide_parameters=True)


COPY_THRESHOLD = 32
_INSERTS: dict[tuple[str, tuple[str, ...]], Sql] = {}


def bulk_insert(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows: PostgreSQL's COPY for large sets, a prepared executemany otherwise.

    COPY skips per-row statement overhead, which is what makes partner bulk files fast; the
    rows still pass every constraint and trigger of the table.
    """
    if not rows:
        return
    columns = list(rows[0])
    if len(rows) < COPY_THRESHOLD or not is_postgres(session):
        # Bounded: one statement per table and column set that the code writes.
        key = (table.name, tuple(columns))
        statement = _INSERTS.get(key)
        if statement is None:
            statement = _INSERTS[key] = Sql(insert(table), columns)
        statement.run_many(session, rows)
        return
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)}
    names = ", ".join(f'"{c}"' for c in columns)
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([json.dumps(row[c]) if c in json_columns else row[c] for c in columns])


def rows_together(session: Session, queries: Sequence[tuple[Sql, Params]]) -> list[list[Any]]:
    """Every row of each query, the queries sent together: on PostgreSQL in one pipeline (one
    round trip for all, run in order by the server), on SQLite one after the other."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return [query.rows(session, params) for query, params in queries]
    pooled = connection.connection
    cursors: list[psycopg.Cursor[Any]] = pooled.info.setdefault("clearing_pipeline_cursors", [])
    raw = cast(psycopg.Connection[Any], pooled.driver_connection)
    while len(cursors) < len(queries):
        cursors.append(raw.cursor(row_factory=namedtuple_row))
    sqls = [query._pg_sql() for query, _ in queries]
    try:
        with raw.pipeline():
            for cursor, sql, (query, params) in zip(cursors, sqls, queries, strict=False):
                cursor.execute(sql, query._params(params), prepare=True)
        return [cursor.fetchall() for cursor in cursors[: len(queries)]]
    except psycopg.Error as error:
        raise _wrapped("; ".join(sqls), error) from error
