"""The window readers: the setting chooses one (default select), psql is used only when chosen,
and the PostgreSQL COPY reader gives the same frames (and so the same files) as the SQLAlchemy
one."""

from __future__ import annotations

import dataclasses
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, create_engine, select

from clearing.core.config import Settings
from clearing.core.db import make_engine, transaction
from clearing.core.kinds import OrgKind
from clearing.core.timeutil import business_window
from clearing.web.platform_key import load_or_create
from settlement import repository as repo
from settlement.files import write_batch_folders
from settlement.lines import LINE_COLUMNS, Party, normalize_frame
from settlement.models import SettlementBatch
from settlement.service import run_batch, verify_tree
from settlement.statement import StatementMeta
from tests.settlement.settlement_world import (
    AFTER_DAY2,
    DAY1,
    DAY2,
    book_two_days,
    settlement_settings,
)


def _frame(chunks: list[pd.DataFrame]) -> pd.DataFrame:
    if not chunks:
        return normalize_frame(pd.DataFrame({c: [] for c in LINE_COLUMNS}))
    return pd.concat([normalize_frame(c) for c in chunks], ignore_index=True)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_copy_and_select_readers_give_identical_frames_and_files(
    pg_engine: Engine, tmp_path: Path
) -> None:
    book_two_days(pg_engine)
    assert shutil.which("psql") is not None
    for day in (DAY1, DAY2):
        start, end = business_window(day, "Asia/Shanghai", "00:00")
        fast_chunks = list(repo.iter_window_frames_copy(pg_engine, "CNY", start, end, chunk_rows=3))
        slow_chunks = list(repo.iter_window_frames_select(pg_engine, "CNY", start, end))
        fast, slow = _frame(fast_chunks), _frame(slow_chunks)
        assert len(fast) > 3
        pd.testing.assert_frame_equal(fast, slow, check_exact=True)
        assert list(fast.columns) == list(LINE_COLUMNS)
        assert str(fast["booked_at"].dtype) == "datetime64[us, UTC]"
        # point_value is the ledger Decimal's text, numeric(24, 12) on PostgreSQL.
        values = {v for v in fast["point_value"] if v}
        assert values
        assert all(len(v.split(".")[1]) == 12 for v in values)
        # One party's lines.
        party = fast["payee"].iloc[0]
        pd.testing.assert_frame_equal(
            _frame(list(repo.iter_window_frames_copy(pg_engine, "CNY", start, end, party=party))),
            _frame(list(repo.iter_window_frames_select(pg_engine, "CNY", start, end, party=party))),
            check_exact=True,
        )
    # The files do not depend on the reader.
    start, end = business_window(DAY1, "Asia/Shanghai", "00:00")
    lines = _frame(list(repo.iter_window_frames_select(pg_engine, "CNY", start, end)))
    ids = sorted(set(lines["payer"]) | set(lines["payee"]))
    parties = [Party(p, f"Party {n}", OrgKind.MERCHANT, "CNY") for n, p in enumerate(ids)]
    meta = StatementMeta(
        batch_id="SB-CNY-20261120",
        settlement_date=DAY1,
        window_start=start,
        window_end=end,
        zone="Asia/Shanghai",
        currency="CNY",
        generated_at=datetime(2026, 11, 21, 1, 0, tzinfo=UTC),
        sequence=1,
        previous_file_id=None,
    )
    key = Ed25519PrivateKey.generate()
    readers = {
        "copy": lambda: repo.iter_window_frames_copy(pg_engine, "CNY", start, end, chunk_rows=2),
        "select": lambda: repo.iter_window_frames_select(pg_engine, "CNY", start, end),
    }
    for name, source in readers.items():
        write_batch_folders(
            source,
            {p.id: tmp_path / name / p.id for p in parties},
            parties,
            {p.id: meta for p in parties},
            signing_key=key,
            key_id="test",
        )
    assert _tree(tmp_path / "copy") == _tree(tmp_path / "select")


def test_copy_reader_of_an_empty_window_yields_nothing(pg_engine: Engine) -> None:
    start = datetime(2001, 1, 1, tzinfo=UTC)
    end = datetime(2001, 1, 2, tzinfo=UTC)
    assert list(repo.iter_window_frames_copy(pg_engine, "CNY", start, end)) == []


def test_psql_gets_the_password_through_its_environment_only() -> None:
    engine = create_engine("postgresql+psycopg://clearing:s3cr%27et@db.example:6543/ledger")
    command, env = repo._psql_command(engine)
    assert not any("s3cr" in part for part in command)
    assert env["PGPASSWORD"] == "s3cr'et"
    assert "host='db.example'" in command[-1]
    assert "port='6543'" in command[-1]
    assert "dbname='ledger'" in command[-1]
    assert "user='clearing'" in command[-1]


def test_prefixed_columns_keep_their_text_whatever_pandas_infers() -> None:
    numeric = pd.Series(["x0.005000000000", "x0.010000000000"], dtype="category")
    assert repo._unprefixed(numeric).astype(object).tolist() == ["0.005000000000", "0.010000000000"]
    null_and_empty = pd.Series(["", "x", "x007"], dtype="category")
    assert repo._unprefixed(null_and_empty).tolist() == ["", "", "007"]


def test_the_setting_names_the_reader_and_defaults_to_select(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLEARING_SETTLEMENT_READER", raising=False)
    assert Settings.from_env().settlement_reader == "select"
    monkeypatch.setenv("CLEARING_SETTLEMENT_READER", "psql")
    assert Settings.from_env().settlement_reader == "psql"
    monkeypatch.setenv("CLEARING_SETTLEMENT_READER", "copy")
    with pytest.raises(ValueError, match="CLEARING_SETTLEMENT_READER"):
        Settings.from_env()


@pytest.fixture
def psql_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `psql` first on the PATH that notes each call in the returned file, then runs the
    real one."""
    real = shutil.which("psql")
    assert real is not None
    log = tmp_path / "psql-calls"
    log.touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "psql"
    wrapper.write_text(f'#!/bin/sh\necho called >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which("psql") == str(wrapper)
    return log


def test_psql_on_the_path_is_used_only_when_the_setting_says_psql(
    pg_engine: Engine, psql_log: Path
) -> None:
    book_two_days(pg_engine)
    start, end = business_window(DAY1, "Asia/Shanghai", "00:00")
    chosen = {
        reader: _frame(list(repo.iter_window_frames(pg_engine, "CNY", start, end, reader=reader)))
        for reader in ("select", "psql")
    }
    assert psql_log.read_text().splitlines() == ["called"]  # the psql read only
    assert len(chosen["select"]) > 3
    pd.testing.assert_frame_equal(chosen["select"], chosen["psql"], check_exact=True)


@pytest.mark.parametrize("reader", ["select", "psql"])
def test_a_batch_reads_its_window_with_the_configured_reader(
    pg_url: str, tmp_path: Path, psql_log: Path, reader: str
) -> None:
    engine = make_engine(pg_url)
    try:
        book_two_days(engine)
        settings = dataclasses.replace(
            settlement_settings(pg_url, tmp_path), settlement_reader=reader
        )
        batch = run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings)
    finally:
        engine.dispose()
    assert batch.state == "published"
    assert batch.line_count
    checked, errors = verify_tree(
        settings.settlement_dir, load_or_create(settings.platform_key_path).public_key
    )
    assert errors == []
    assert checked == len(batch.positions)
    calls = psql_log.read_text().splitlines()
    assert calls == ([] if reader == "select" else ["called"])


def test_the_psql_reader_on_sqlite_stops_the_batch_and_says_why(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url)
    try:
        book_two_days(engine)
        settings = dataclasses.replace(
            settlement_settings(sqlite_url, tmp_path), settlement_reader="psql"
        )
        with pytest.raises(repo.WindowReaderUnavailable, match="needs PostgreSQL"):
            run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings)
        with transaction(engine) as session:
            batch = session.execute(select(SettlementBatch)).scalar_one()
            assert batch.state == "closing"
            assert batch.error is not None
            assert "needs PostgreSQL" in batch.error
    finally:
        engine.dispose()


def test_formats_shared_by_lines_change_no_byte(engine: Engine, tmp_path: Path) -> None:
    """From the ledger's window (both databases), with parties above and below the detail
    limit: one process or two sharing the formats by lines write the same bytes."""
    book_two_days(engine)
    start, end = business_window(DAY2, "Asia/Shanghai", "00:00")
    with transaction(engine) as session:
        platform = repo.platform_organisation(session)
        assert platform is not None
        platform_id = str(platform.id)
    lines = _frame(list(repo.iter_window_frames_select(engine, "CNY", start, end)))
    ids = sorted({*lines["payer"], *lines["payee"], platform_id})
    parties = [
        Party(p, f"Party {n}", OrgKind.PLATFORM if p == platform_id else OrgKind.MERCHANT, "CNY")
        for n, p in enumerate(ids)
    ]
    meta = StatementMeta(
        batch_id="SB-CNY-20261121",
        settlement_date=DAY2,
        window_start=start,
        window_end=end,
        zone="Asia/Shanghai",
        currency="CNY",
        generated_at=datetime(2026, 11, 22, 1, 0, tzinfo=UTC),
        sequence=1,
        previous_file_id=None,
    )
    key = Ed25519PrivateKey.generate()

    def write(name: str, workers: int, detail_limit: int) -> dict[str, int]:
        written = write_batch_folders(
            repo.WindowSource(engine, "CNY", start, end, "select", chunk_rows=3),
            {p.id: tmp_path / name / p.id for p in parties},
            parties,
            {p.id: meta for p in parties},
            signing_key=key,
            key_id="test",
            workers=workers,
            detail_limit=detail_limit,
        )
        assert written.workers == workers
        return {pid: f.totals.count for pid, f in written.parties.items()}

    counts = sorted(c for p, c in write("probe", 1, 10_000).items() if p != platform_id)
    limit = counts[len(counts) // 2]  # about half the parties above it, half at or below
    assert counts[0] <= limit < counts[-1]
    write("one", 1, limit)
    write("two", 2, limit)
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two")
    assert verify_tree(tmp_path / "two", key.public_key()) == (len(parties), [])
