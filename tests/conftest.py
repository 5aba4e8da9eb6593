"""Real databases for the tests: PostgreSQL (a fresh database per test, cloned from a migrated
template) and SQLite (a fresh file per test, copied from a migrated one)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from clearing.app.migrate import upgrade
from clearing.core.config import LedgerEngine
from clearing.core.db import make_engine
from clearing.core.ledger import LedgerOptions, bind_ledger_options


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(f"PostgreSQL server binary {name} not found")


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """An administrative URL of a PostgreSQL server: given, local, or a throwaway cluster."""
    given = os.environ.get("CLEARING_TEST_DATABASE_URL")
    if given:
        yield given
        return
    if _listening("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/test"
        return
    data = Path(tempfile.mkdtemp(prefix="clearing-pg-"))
    port = _free_port()
    user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if user:
        shutil.chown(data, "postgres")
    subprocess.run(
        [*user, _pg_bin("initdb"), "-D", str(data / "db"), "-U", "postgres", "-A", "trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *user,
            _pg_bin("pg_ctl"),
            "-D",
            str(data / "db"),
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            "-w",
            "start",
            "-l",
            str(data / "log"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*user, _pg_bin("pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


def _admin_engine(url: str) -> Engine:
    return create_engine(
        make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A migrated template database for this run; dropped at the end."""
    name = f"clearing_tpl_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = _admin_engine(pg_admin_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy for each test."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def pg_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = f"clearing_t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine(pg_admin_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    try:
        yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_databases(pg_admin_url: str, pg_template: str) -> Iterator[Callable[[], str]]:
    """Makes fresh, migrated PostgreSQL databases for one test (twins, say); drops them after."""
    admin = _admin_engine(pg_admin_url)
    names: list[str] = []

    def fresh() -> str:
        names.append(f"clearing_t_{os.getpid()}_{uuid.uuid4().hex[:10]}")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{names[-1]}" TEMPLATE "{pg_template}"'))
        return make_url(pg_admin_url).set(database=names[-1]).render_as_string(hide_password=False)

    try:
        yield fresh
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database for one test."""
    path = tmp_path / "clearing.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that takes `db_url` runs on SQLite and PostgreSQL; a test marked
    `ledger_engines` runs its PostgreSQL part on both ledger engines (`server`, the
    `ledger_post` function, and `python`, the portable engine SQLite always uses)."""
    both = metafunc.definition.get_closest_marker("ledger_engines") is not None
    chosen = set()
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        chosen |= set(names.replace(" ", "").split(",") if isinstance(names, str) else names)
    if "db_url" in metafunc.fixturenames and "db_url" not in chosen:
        if not both:
            metafunc.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
            return
        metafunc.parametrize(
            ("db_url", "ledger_engine"),
            [("sqlite", "python"), ("postgresql", "server"), ("postgresql", "python")],
            ids=["sqlite", "postgresql", "postgresql-python"],
            indirect=True,
        )
    elif both and "pg_engine" in metafunc.fixturenames:
        metafunc.parametrize("ledger_engine", ["server", "python"], indirect=True)


@pytest.fixture
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database of the kind the test's parameter names (see pytest_generate_tests)."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def ledger_engine(request: pytest.FixtureRequest) -> LedgerEngine:
    """The engine the ledger posts with on PostgreSQL: `server` unless parametrised."""
    return cast(LedgerEngine, getattr(request, "param", "server"))


@pytest.fixture
def engine(db_url: str, ledger_engine: LedgerEngine) -> Iterator[Engine]:
    """An engine on a fresh database of either kind."""
    eng = bind_ledger_options(make_engine(db_url), LedgerOptions(engine=ledger_engine))
    yield eng
    eng.dispose()


@pytest.fixture
def pg_engine(pg_url: str, ledger_engine: LedgerEngine) -> Iterator[Engine]:
    """An engine on a fresh PostgreSQL database (concurrency and database-enforced rules)."""
    eng = bind_ledger_options(make_engine(pg_url), LedgerOptions(engine=ledger_engine))
    yield eng
    eng.dispose()
