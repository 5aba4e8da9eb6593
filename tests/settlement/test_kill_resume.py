"""Kill -9 a real `clearing settlement run` at every step; the rerun gives the same bytes.

Each test books a day, copies the database, settles the copy in one uninterrupted run, then
settles the original in a process that SIGKILLs itself at a chosen point (the same batch run
with probes.CrashAt injected as its probe) and reruns it with the real CLI. The two settlement trees
must be byte-identical and the batch published exactly once. Needs real commits: file SQLite
databases and real PostgreSQL databases, no rolled-back transactions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from clearing.core.db import make_engine, transaction
from settlement.models import SettlementBatch, SettlementPosition
from tests.settlement.settlement_world import AFTER_DAY2, DAY1, book_two_days

CLI = [sys.executable, "-c", "from clearing.app.cli import app; app()"]
CRASHING = [
    sys.executable,
    "-c",
    # Run from the project folder (the runs' cwd), where `tests` is a package.
    "import sys; from tests.settlement import probes; probes.main(sys.argv[1:])",
]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every published file under `root` (the Spark engine's exported window aside)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != ".window"
    }


def run_cli(
    url: str,
    out: Path,
    key: Path,
    crash: str | None = None,
    workers: int = 1,
    engine: str = "pandas",
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CLEARING_DATABASE_URL": url,
        "CLEARING_SETTLEMENT_DIR": str(out),
        "CLEARING_PLATFORM_KEY": str(key),
        "CLEARING_ZONE": "Asia/Shanghai",
        "CLEARING_CUTOFF": "00:00",
        "CLEARING_SETTLEMENT_WORKERS": str(workers),
        "CLEARING_SETTLEMENT_ENGINE": engine,
    }
    if crash is None:
        command = [
            *CLI,
            "settlement",
            "run",
            "--date",
            DAY1.isoformat(),
            "--currency",
            "CNY",
            "--as-of",
            AFTER_DAY2.isoformat(),
        ]
    else:
        command = [*CRASHING, crash, DAY1.isoformat(), "CNY", AFTER_DAY2.isoformat()]
    return subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )


def check_kill_and_resume(
    original: str,
    copy: str,
    tmp_path: Path,
    crash: str,
    workers: int = 1,
    settle_on: str = "pandas",
) -> None:
    """The reference run writes with one process on the pandas engine; the killed run and its
    rerun with `workers` on `settle_on`: the same bytes whatever the engine."""
    key = tmp_path / "keys" / "platform.pem"
    reference = run_cli(copy, tmp_path / "reference", key)
    assert reference.returncode == 0, reference.stderr
    killed = run_cli(original, tmp_path / "crashed", key, crash, workers, settle_on)
    assert killed.returncode == -9, (killed.returncode, killed.stdout, killed.stderr)
    if crash.startswith(("lines:", "party:")):
        # Killed inside the pass that nets and writes: nothing committed past closing, nothing
        # but the staging folder on disk (the rerun deletes it and writes it again).
        engine = make_engine(original)
        with transaction(engine) as session:
            batch = session.execute(select(SettlementBatch)).scalar_one()
            assert batch.state == ("exported" if settle_on == "spark" else "closing")
            assert session.execute(select(func.count(SettlementPosition.org_id))).scalar() == 0
        engine.dispose()
        day = tmp_path / "crashed" / "CNY"
        assert sorted(p.name for p in day.iterdir()) == [".2026-11-20.staging"]
    if crash == "exported":
        # Killed right after the export was committed: the window is complete on disk.
        window = tmp_path / "crashed" / ".window" / "currency=CNY" / "business_date=2026-11-20"
        assert [p.name for p in window.iterdir()] == ["part-00000.parquet"]
    resumed = run_cli(original, tmp_path / "crashed", key, workers=workers, engine=settle_on)
    assert resumed.returncode == 0, resumed.stderr
    assert "published" in resumed.stdout
    expected = tree_bytes(tmp_path / "reference")
    got = tree_bytes(tmp_path / "crashed")
    assert sorted(got) == sorted(expected)
    assert got == expected
    again = run_cli(original, tmp_path / "crashed", key, workers=workers, engine=settle_on)
    assert again.returncode == 0, again.stderr
    assert tree_bytes(tmp_path / "crashed") == expected
    engine = make_engine(original)
    with transaction(engine) as session:
        batches = session.execute(select(SettlementBatch)).scalars().all()
        assert [(b.id, b.state) for b in batches] == [("SB-CNY-20261120", "published")]
        assert session.execute(select(func.count()).select_from(SettlementBatch)).scalar() == 1
    engine.dispose()


@pytest.mark.parametrize(
    "crash",
    ["open", "closing", "netted", "lines:3", "party:2", "files_written", "renamed"],
)
def test_kill_and_resume_sqlite(sqlite_url: str, tmp_path: Path, crash: str) -> None:
    engine = make_engine(sqlite_url)
    book_two_days(engine)
    engine.dispose()
    path = Path(make_url(sqlite_url).database or "")
    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    check_kill_and_resume(sqlite_url, f"sqlite:///{copy}", tmp_path, crash)


@pytest.mark.parametrize("crash", ["lines:3", "party:1", "party:2", "files_written"])
def test_kill_and_resume_two_workers_sqlite(sqlite_url: str, tmp_path: Path, crash: str) -> None:
    """The files step in two processes: a worker's crash takes the batch down; same bytes."""
    engine = make_engine(sqlite_url)
    book_two_days(engine)
    engine.dispose()
    path = Path(make_url(sqlite_url).database or "")
    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    check_kill_and_resume(sqlite_url, f"sqlite:///{copy}", tmp_path, crash, workers=2)


@pytest.fixture
def pg_copy(pg_url: str, pg_admin_url: str) -> Iterator[tuple[str, str]]:
    engine = make_engine(pg_url)
    book_two_days(engine)
    engine.dispose()
    source = make_url(pg_url).database
    name = f"clearing_copy_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        make_url(pg_admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
    try:
        yield pg_url, make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize(
    ("crash", "workers"), [("netted", 1), ("lines:5", 1), ("lines:5", 2), ("files_written", 2)]
)
def test_kill_and_resume_postgresql(
    pg_copy: tuple[str, str], tmp_path: Path, crash: str, workers: int
) -> None:
    original, copy = pg_copy
    check_kill_and_resume(original, copy, tmp_path, crash, workers)


@pytest.mark.parametrize(
    "crash", ["closing", "exported", "party:2", "netted", "files_written", "renamed"]
)
def test_kill_and_resume_on_spark_sqlite(sqlite_url: str, tmp_path: Path, crash: str) -> None:
    """Killed and resumed on the Spark engine: the pandas engine's bytes, published once.
    `party:2`: a Spark task takes the batch down after writing its second party's files."""
    engine = make_engine(sqlite_url)
    book_two_days(engine)
    engine.dispose()
    path = Path(make_url(sqlite_url).database or "")
    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    check_kill_and_resume(sqlite_url, f"sqlite:///{copy}", tmp_path, crash, settle_on="spark")


@pytest.mark.parametrize("crash", ["exported", "files_written"])
def test_kill_and_resume_on_spark_postgresql(
    pg_copy: tuple[str, str], tmp_path: Path, crash: str
) -> None:
    original, copy = pg_copy
    check_kill_and_resume(original, copy, tmp_path, crash, settle_on="spark")
