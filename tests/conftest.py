"""Real databases for the tests: PostgreSQL (a fresh database per test, cloned from a migrated
template) and SQLite (a fresh file per test, copied from a migrated one)."""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
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
            # A throwaway cluster: durability would only cost the tests time.
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off",
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


class _Databases:
    """Fresh clones of the template, made ahead in a thread and dropped behind in another.

    Creating and dropping a database each cost the server a WAL copy or a checkpoint: a test
    should not wait for either. A clone made ahead is as fresh as one made on demand, since the
    template never changes once migrated. Commits skip the WAL flush (`synchronous_commit=off`):
    no test crashes the server, only clients.
    """

    AHEAD = 2

    def __init__(self, admin_url: str, template: str) -> None:
        self.admin = _admin_engine(admin_url)
        self.template = template
        self.ready: queue.Queue[str] = queue.Queue(maxsize=self.AHEAD)
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-db")
        self.drops: list[Future[None]] = []
        self.maker = threading.Thread(target=self._make, name="make-db", daemon=True)
        self.maker.start()

    def _make(self) -> None:
        while not self.stopping.is_set():
            name = f"clearing_t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
            try:
                with self.admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
                    conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
            except BaseException as error:  # the test waiting for a database shows why
                self.error = error
                return
            while True:
                try:
                    self.ready.put(name, timeout=0.2)
                    break
                except queue.Full:
                    if self.stopping.is_set():
                        self.drop(name)
                        return

    def take(self) -> str:
        """The name of a fresh database, now this test's own."""
        while True:
            try:
                return self.ready.get(timeout=0.2)
            except queue.Empty:
                if not self.maker.is_alive():
                    raise RuntimeError("no fresh database: making one failed") from self.error

    def drop(self, name: str) -> None:
        """Drop ``name`` behind the tests (and its leftover connections with it)."""
        self.drops.append(self.dropper.submit(self._drop, name))

    def _drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        """Stop making, drop what is left, and wait until every drop is done."""
        self.stopping.set()
        while self.maker.is_alive() or not self.ready.empty():
            with suppress(queue.Empty):
                self.drop(self.ready.get(timeout=0.2))
        self.dropper.shutdown(wait=True)
        self.admin.dispose()
        for drop in self.drops:
            drop.result()  # a database left behind fails the run instead of piling up


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A migrated template database for this run (for this worker under xdist); dropped at the end."""
    name = f"clearing_tpl_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = _admin_engine(pg_admin_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def _pg_databases(pg_admin_url: str, pg_template: str) -> Iterator[_Databases]:
    databases = _Databases(pg_admin_url, pg_template)
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy for each test."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def pg_url(pg_admin_url: str, _pg_databases: _Databases) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = _pg_databases.take()
    try:
        yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _pg_databases.drop(name)


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


# The tests that take longest, longest first (measured with --durations on 2 cores). Under xdist
# they go out first, one between two short ones, so that no two of them wait in one worker's queue
# and the run does not end on one worker still in a long test.
_LONG_RUNNING = (
    "tests/exchange/test_rounding_splits.py::test_no_split_of_accruals_reversals_checkouts_or_refunds_beats_the_whole[postgresql]",
    "tests/clearing/test_readme_blocks.py::",
    "tests/exchange/test_rounding_splits.py::test_no_split_of_a_conversion_beats_the_whole[postgresql]",
    "tests/exchange/test_rounding_splits.py::test_no_split_of_accruals_reversals_checkouts_or_refunds_beats_the_whole[sqlite]",
    "tests/settlement/test_files.py::test_vectorised_csv_is_byte_identical_to_row_by_row",
    "tests/exchange/test_rounding_splits.py::test_no_split_of_a_conversion_beats_the_whole[sqlite]",
    "tests/clearing/test_ledger_model.py::test_ledger_matches_model[postgresql-12]",
    "tests/clearing/test_ledger_model.py::test_ledger_matches_model[sqlite-40]",
    "tests/clearing/test_ledger_model.py::",
    "tests/clearing/test_ledger_differential.py::",
    "tests/settlement/test_large_amounts.py::",
    "tests/settlement/test_files.py::test_two_workers_write_the_same_bytes_as_one",
    "tests/settlement/test_kill_resume.py::",
    "tests/settlement/test_netting.py::test_chunked_clearing_matches_the_plain_model",
    "tests/api/test_api_schemathesis.py::",
    "tests/exchange/test_rounding_splits.py::",
)


def _rank(item: pytest.Item) -> int:
    return next(
        (n for n, prefix in enumerate(_LONG_RUNNING) if item.nodeid.startswith(prefix)),
        len(_LONG_RUNNING),
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first, each followed by a short one (the order of the rest is kept)."""
    ranked = sorted(items, key=_rank)  # stable: equal ranks keep their collected order
    long = [item for item in ranked if _rank(item) < len(_LONG_RUNNING)]
    short = ranked[len(long) :]
    items[:] = [
        item for pair in itertools.zip_longest(long, short[: len(long)]) for item in pair if item
    ] + short[len(long) :]
