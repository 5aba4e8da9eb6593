"""Every command's failure: one line on stderr, a non-zero exit, nothing written; and the schema
check every command meets (SQLite migrates itself, PostgreSQL says to run `clearing db upgrade`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

import clearing.app.tables  # noqa: F401
from clearing.app.cli import app
from clearing.app.migrate import current_revision, head_revision, upgrade
from clearing.core.db import make_engine, transaction
from issuers.models import ApiKey, Organisation
from settlement.models import SettlementBatch

CLI = [sys.executable, "-c", "from clearing.app.cli import app; app()"]


def invoke(url: str, *args: str) -> Result:
    """Run `clearing ARGS` on the database at `url`."""
    return CliRunner().invoke(app, list(args), env={"CLEARING_DATABASE_URL": url})


def one_line_error(result: Result, exit_code: int = 1) -> str:
    """The failure's one line; asserts the exit code, an empty stdout and no traceback."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert "Traceback" not in result.stderr
    return lines[0]


def count(url: str, model: type[object]) -> int:
    """Rows of `model`'s table at `url`."""
    engine = make_engine(url)
    try:
        with transaction(engine) as session:
            return int(session.execute(select(func.count()).select_from(model)).scalar_one())
    finally:
        engine.dispose()


def tables(url: str) -> list[str]:
    """The tables at `url` (to show nothing was created)."""
    engine = make_engine(url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(autouse=True)
def _own_var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keys and settlement files go to the test's folder, never the working directory's var/.
    monkeypatch.setenv("CLEARING_VAR_DIR", str(tmp_path / "var"))
    for name in ("CLEARING_SETTLEMENT_DIR", "CLEARING_PLATFORM_KEY", "CLEARING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pg_blank_url(pg_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database that was never migrated."""
    name = f"clearing_blank_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        make_url(pg_admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_older_url(pg_blank_url: str) -> str:
    """A PostgreSQL database one migration behind the code."""
    engine = make_engine(pg_blank_url)
    upgrade(engine, "0006")
    engine.dispose()
    return pg_blank_url


def _stamp(url: str, revision: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


# The schema check, on every command that opens the database. ------------------------------

DATABASE_COMMANDS = [
    ["ledger", "check"],
    ["expire"],
    ["org", "create", "--kind", "platform", "--name", "P"],
    ["key", "revoke", "nokey"],
    ["serve", "--port", "1"],
    ["settlement", "run", "--date", "2026-11-24"],
    ["settlement", "status"],
    ["scheduler"],
]


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_postgresql_never_migrated_says_run_db_upgrade(pg_blank_url: str, args: list[str]) -> None:
    line = one_line_error(invoke(pg_blank_url, *args))
    assert line.endswith("has no schema yet: run `clearing db upgrade`"), line
    assert tables(pg_blank_url) == []


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_postgresql_behind_the_code_says_run_db_upgrade(pg_older_url: str, args: list[str]) -> None:
    line = one_line_error(invoke(pg_older_url, *args))
    assert f"is at revision 0006, not {head_revision()}: run `clearing db upgrade`" in line
    engine = make_engine(pg_older_url)
    assert current_revision(engine) == "0006"
    engine.dispose()


def test_key_add_meets_the_schema_check_too(pg_blank_url: str, tmp_path: Path) -> None:
    pem = tmp_path / "k.pem"
    pem.write_text(_public_pem())
    line = one_line_error(
        invoke(pg_blank_url, "key", "add", str(uuid.uuid4()), "--public-key", str(pem))
    )
    assert "run `clearing db upgrade`" in line


def test_sqlite_migrates_itself_on_first_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh/clearing.db"
    done = invoke(url, "ledger", "check")
    assert done.exit_code == 0, done.output
    assert done.stdout == "ledger check: clean\n"
    engine = make_engine(url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_sqlite_behind_the_code_is_brought_up_to_date(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/older.db"
    engine = make_engine(url)
    upgrade(engine, "0006")
    created = invoke(url, "org", "create", "--kind", "issuer", "--name", "Bank")
    assert created.exit_code == 0, created.output
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_a_database_newer_than_the_code_is_left_alone(db_url: str) -> None:
    _stamp(db_url, "9999")
    line = one_line_error(invoke(db_url, "ledger", "check"))
    assert "is at revision 9999, which this code does not know" in line
    engine = make_engine(db_url)
    assert current_revision(engine) == "9999"
    engine.dispose()


# db upgrade ---------------------------------------------------------------------------------


def test_db_upgrade_to_an_unknown_revision_writes_nothing(pg_blank_url: str) -> None:
    line = one_line_error(invoke(pg_blank_url, "db", "upgrade", "nonsense"))
    assert "nonsense" in line
    assert tables(pg_blank_url) == []


def test_db_upgrade_then_the_commands_work(pg_blank_url: str) -> None:
    done = invoke(pg_blank_url, "db", "upgrade")
    assert done.exit_code == 0, done.output
    assert invoke(pg_blank_url, "ledger", "check").stdout == "ledger check: clean\n"


def test_an_unreachable_database_is_one_line() -> None:
    line = one_line_error(invoke("postgresql://postgres@127.0.0.1:1/nowhere", "db", "upgrade"))
    assert line.startswith("error: database error: connection failed"), line
    assert "run with --debug for the traceback" in line


# expire, ledger check -----------------------------------------------------------------------


def test_expire_refuses_a_limit_below_one(db_url: str) -> None:
    line = one_line_error(invoke(db_url, "expire", "--limit", "0"), exit_code=2)
    assert "--limit" in line


# org create ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--kind", "bank", "--name", "X"], "kind: Input should be"),
        (["--kind", "issuer", "--name", "X", "--currency", "XXX"], "XXX"),
        (["--kind", "issuer", "--name", ""], "name"),
    ],
)
def test_org_create_refuses_bad_input(db_url: str, args: list[str], says: str) -> None:
    line = one_line_error(invoke(db_url, "org", "create", *args))
    assert says in line
    assert count(db_url, Organisation) == 0


def test_org_create_refuses_a_second_platform(db_url: str) -> None:
    first = invoke(db_url, "org", "create", "--kind", "platform", "--name", "P")
    assert first.exit_code == 0, first.output
    line = one_line_error(invoke(db_url, "org", "create", "--kind", "platform", "--name", "Q"))
    assert line == "error: conflict: the platform organisation already exists"
    assert count(db_url, Organisation) == 1


def test_org_create_without_a_required_option_is_a_usage_error(db_url: str) -> None:
    line = one_line_error(invoke(db_url, "org", "create", "--name", "X"), exit_code=2)
    assert "--kind" in line
    assert "clearing org create --help" in line


# key add, key revoke ------------------------------------------------------------------------


def _public_pem() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def _organisation(url: str) -> str:
    created = invoke(url, "org", "create", "--kind", "issuer", "--name", "Bank")
    assert created.exit_code == 0, created.output
    return created.stdout.strip()


def test_key_add_refuses_what_is_not_a_key(db_url: str, tmp_path: Path) -> None:
    org = _organisation(db_url)
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    line = one_line_error(invoke(db_url, "key", "add", org, "--public-key", str(bad)))
    assert line.startswith("error: "), line
    assert count(db_url, ApiKey) == 0


def test_key_add_refuses_an_unknown_organisation(db_url: str, tmp_path: Path) -> None:
    pem = tmp_path / "k.pem"
    pem.write_text(_public_pem())
    line = one_line_error(invoke(db_url, "key", "add", str(uuid.uuid4()), "--public-key", str(pem)))
    assert line == "error: not_found: unknown organisation"
    assert count(db_url, ApiKey) == 0


@pytest.mark.parametrize("org", ["not-an-id", "12"])
def test_key_add_refuses_what_is_not_an_organisation_id(
    db_url: str, tmp_path: Path, org: str
) -> None:
    pem = tmp_path / "k.pem"
    pem.write_text(_public_pem())
    line = one_line_error(invoke(db_url, "key", "add", org, "--public-key", str(pem)), exit_code=2)
    assert f"not an organisation id: '{org}'" in line
    assert count(db_url, ApiKey) == 0


def test_key_add_refuses_a_missing_key_file(db_url: str, tmp_path: Path) -> None:
    org = _organisation(db_url)
    missing = tmp_path / "missing.pem"
    line = one_line_error(invoke(db_url, "key", "add", org, "--public-key", str(missing)), 2)
    assert "does not exist" in line
    assert count(db_url, ApiKey) == 0


def test_key_revoke_refuses_an_unknown_key(db_url: str) -> None:
    line = one_line_error(invoke(db_url, "key", "revoke", "no-such-key"))
    assert line == "error: not_found: unknown key"


# demo ---------------------------------------------------------------------------------------


def test_demo_refuses_a_database_that_holds_anything(db_url: str) -> None:
    _organisation(db_url)
    line = one_line_error(invoke(db_url, "demo"))
    assert line.startswith("error: database_not_empty: the demo needs an empty database")
    assert count(db_url, Organisation) == 1


def test_demo_on_postgresql_behind_the_code_says_run_db_upgrade(pg_older_url: str) -> None:
    line = one_line_error(invoke(pg_older_url, "demo"))
    assert "run `clearing db upgrade`" in line
    assert count(pg_older_url, Organisation) == 0


# serve --------------------------------------------------------------------------------------


def test_serve_refuses_a_port_out_of_range(db_url: str) -> None:
    line = one_line_error(invoke(db_url, "serve", "--port", "70000"), exit_code=2)
    assert "--port" in line


def test_serve_refuses_a_port_in_use(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(invoke(db_url, "serve", "--port", str(port)), exit_code=2)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line


def test_serve_refuses_a_host_it_cannot_resolve(db_url: str) -> None:
    line = one_line_error(invoke(db_url, "serve", "--host", "no-such-host.invalid"), exit_code=2)
    assert "cannot listen on no-such-host.invalid:8000" in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_on_a_fresh_sqlite_database_starts_and_answers(tmp_path: Path) -> None:
    # Real process, real port: the server migrates the embedded database before it starts.
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARING_")}
    env["CLEARING_VAR_DIR"] = str(tmp_path / "var")
    server = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--no-scheduler"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "the server did not answer in 60 s"
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/platform/keys", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert answer.status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr
    engine = make_engine(f"sqlite:///{tmp_path}/var/clearing.db")
    assert current_revision(engine) == head_revision()
    engine.dispose()


# platform-key -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"not a key\n",
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
    ],
    ids=["garbage", "public-key-only"],
)
def test_platform_key_refuses_a_file_that_is_not_a_private_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    path = tmp_path / "platform.pem"
    path.write_bytes(content)
    monkeypatch.setenv("CLEARING_PLATFORM_KEY", str(path))
    line = one_line_error(CliRunner().invoke(app, ["platform-key"]))
    assert line.startswith("error: "), line
    assert path.read_bytes() == content


# settlement ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--date", "2026-13-01"], "not a date (YYYY-MM-DD): '2026-13-01'"),
        (["--date", "2026-11-24", "--as-of", "yesterday"], "not an ISO 8601 instant"),
        ([], "--date"),
    ],
)
def test_settlement_run_refuses_bad_input(db_url: str, args: list[str], says: str) -> None:
    line = one_line_error(invoke(db_url, "settlement", "run", *args), exit_code=2)
    assert says in line
    assert count(db_url, SettlementBatch) == 0


def test_settlement_run_refuses_a_day_not_yet_closed(db_url: str) -> None:
    invoke(db_url, "org", "create", "--kind", "platform", "--name", "P")
    line = one_line_error(invoke(db_url, "settlement", "run", "--date", "2999-01-01"))
    assert line.startswith("error: batch_not_due: business day 2999-01-01 closes at"), line
    assert count(db_url, SettlementBatch) == 0


def test_settlement_run_refuses_an_unknown_currency(db_url: str) -> None:
    line = one_line_error(
        invoke(db_url, "settlement", "run", "--date", "2026-11-24", "--currency", "QQQ")
    )
    assert "QQQ" in line
    assert count(db_url, SettlementBatch) == 0


def test_settlement_status_refuses_a_limit_below_one(db_url: str) -> None:
    line = one_line_error(invoke(db_url, "settlement", "status", "--limit", "0"), exit_code=2)
    assert "--limit" in line


def test_settlement_verify_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["settlement", "verify", str(tmp_path / "nowhere")])
    line = one_line_error(result, exit_code=2)
    assert "does not exist" in line


def test_settlement_verify_refuses_a_file_that_is_not_a_public_key(tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("not a key\n")
    result = CliRunner().invoke(
        app, ["settlement", "verify", str(tmp_path), "--public-key", str(bad)]
    )
    assert one_line_error(result) == f"error: {bad} is not an Ed25519 public key"


def test_settlement_verify_without_a_platform_key_says_where_it_looked(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["settlement", "verify", str(tmp_path)])
    line = one_line_error(result)
    assert line.startswith("error: no platform key at ")
    assert line.endswith("pass --public-key")
    assert not (tmp_path / "var" / "keys").exists()


def test_scheduler_refuses_a_negative_grace(db_url: str) -> None:
    line = one_line_error(invoke(db_url, "scheduler", "--grace-minutes", "-1"), exit_code=2)
    assert "--grace-minutes" in line


# --debug, in a real process -----------------------------------------------------------------


def test_a_failure_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARING_")}
    env["CLEARING_VAR_DIR"] = str(tmp_path / "var")
    args = ["key", "revoke", "no-such-key"]
    quiet = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 1
    assert quiet.stdout == ""
    assert quiet.stderr == "error: not_found: unknown key\n"
    loud = subprocess.run(
        [*CLI, "--debug", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.rstrip().endswith("clearing.core.errors.NotFound: unknown key")
