"""Settlement batches on the real databases: invariants, files, reruns, bad input, the lock."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import JournalEntry, Obligation
from clearing.core.timeutil import business_date_of, business_window
from clearing.web.platform_key import load_or_create
from settlement import repository as repo
from settlement.camt053 import validation_errors
from settlement.files import CAMT_NAME, CSV_NAME
from settlement.lock import BatchRunning, runner_lock
from settlement.models import SettlementBatch, SettlementFile, SettlementPosition
from settlement.schemas import BatchOut
from settlement.service import csv_trailer_net, run_batch, verify_tree
from tests.factories import T0
from tests.settlement.settlement_world import (
    AFTER_DAY2,
    DAY1,
    DAY2,
    book_two_days,
    settlement_settings,
)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return settlement_settings(db_url, tmp_path)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def ledger_window(engine: Engine, batch: BatchOut) -> tuple[int, int]:
    with transaction(engine) as session:
        count, amount = session.execute(
            select(func.count(), func.coalesce(func.sum(Obligation.amount), 0)).where(
                Obligation.currency == batch.currency,
                Obligation.booked_at >= batch.window_start,
                Obligation.booked_at < batch.window_end,
            )
        ).one()
    return int(count), int(amount)


def test_two_days_settle_exactly_with_verified_files(engine: Engine, settings: Settings) -> None:
    days = book_two_days(engine)
    first = run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings)
    second = run_batch(engine, DAY2, "CNY", AFTER_DAY2, settings)
    public = load_or_create(settings.platform_key_path).public_key
    for batch in (first, second):
        assert batch.state == "published"
        assert batch.error is None
        assert sum(p.net for p in batch.positions) == 0
        assert (batch.line_count, batch.amount_total) == ledger_window(engine, batch)
        platform = next(p for p in batch.positions if p.party_kind == "platform")
        assert platform.net == batch.fee_income
        folder = Path(batch.directory)
        checked, errors = verify_tree(folder, public)
        assert errors == []
        assert checked == len(batch.positions)
        for position in batch.positions:
            party = folder / str(position.org_id)
            assert csv_trailer_net(party / CSV_NAME, "CNY") == position.net
            assert validation_errors(party / CAMT_NAME) == []
    # windows chain, and every obligation is in exactly one of them
    assert first.window_end == second.window_start
    assert second.sequence == first.sequence + 1
    with transaction(engine) as session:
        total = session.execute(
            select(func.count(), func.sum(Obligation.amount)).where(Obligation.currency == "CNY")
        ).one()
    assert (first.line_count or 0) + (second.line_count or 0) == total[0]
    assert (first.amount_total or 0) + (second.amount_total or 0) == total[1]
    # the refund of a day-1 capture settles on day 2 and names the original
    with transaction(engine) as session:
        original = (
            session.execute(
                select(Obligation.original_entry_id).where(
                    Obligation.entry_id == uuid.UUID(days.refund_of_day1)
                )
            )
            .scalars()
            .first()
        )
    assert original is not None
    platform_id = next(p.org_id for p in second.positions if p.party_kind == "platform")
    day2_csv = (Path(second.directory) / str(platform_id) / CSV_NAME).read_text()
    day1_csv = (Path(first.directory) / str(platform_id) / CSV_NAME).read_text()
    assert f"{days.refund_of_day1},{original},checkout_refund" in day2_csv
    assert str(original) in day1_csv
    assert days.refund_of_day1 not in day1_csv
    # statement sequences chain per party
    for position in second.positions:
        before = next((p for p in first.positions if p.org_id == position.org_id), None)
        if before is not None:
            assert position.statement_sequence == before.statement_sequence + 1
            assert position.previous_file_id == before.file_id


def test_rerun_is_a_no_op(engine: Engine, settings: Settings) -> None:
    book_two_days(engine)
    first = run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings)
    before = tree_bytes(settings.settlement_dir)
    again = run_batch(engine, DAY1, "CNY", AFTER_DAY2 + timedelta(days=3), settings)
    assert again == first
    assert tree_bytes(settings.settlement_dir) == before
    with transaction(engine) as session:
        assert session.execute(select(func.count()).select_from(SettlementBatch)).scalar() == 1


def _nothing_written(engine: Engine, settings: Settings) -> None:
    with transaction(engine) as session:
        for table in (SettlementBatch, SettlementPosition, SettlementFile):
            assert session.execute(select(func.count()).select_from(table)).scalar() == 0
    assert (
        not any(settings.settlement_dir.glob("*/*")) if settings.settlement_dir.exists() else True
    )


@pytest.mark.parametrize(
    ("day", "now", "code"),
    [
        (DAY1, datetime(2026, 11, 20, 15, 59, tzinfo=UTC), "batch_not_due"),
        (date(2030, 1, 1), AFTER_DAY2, "batch_not_due"),
        (DAY2, AFTER_DAY2, "earlier_batch_missing"),
    ],
)
def test_bad_dates_write_nothing(
    engine: Engine, settings: Settings, day: date, now: datetime, code: str
) -> None:
    book_two_days(engine)
    with pytest.raises(ClearingError) as err:
        run_batch(engine, day, "CNY", now, settings)
    assert err.value.code == code
    _nothing_written(engine, settings)


def test_unknown_currency_writes_nothing(engine: Engine, settings: Settings) -> None:
    book_two_days(engine)
    with pytest.raises(ClearingError) as err:
        run_batch(engine, DAY1, "XTS", AFTER_DAY2, settings)
    assert err.value.code == "unknown_currency"
    _nothing_written(engine, settings)


def test_party_without_position_account_writes_nothing(engine: Engine, settings: Settings) -> None:
    days = book_two_days(engine)
    stranger = uuid.uuid4()
    entry = uuid.uuid4()
    with transaction(engine) as session:
        # A bare obligation naming an organisation that has no position account.
        session.execute(
            insert(JournalEntry).values(
                id=entry, kind="test", org_id=days.world.shop.org_id, booked_at=T0, memo={}
            )
        )
        session.execute(
            insert(Obligation).values(
                entry_id=entry,
                seq=0,
                event_type="fee",
                payer_org_id=stranger,
                payee_org_id=days.world.platform.org_id,
                currency="CNY",
                amount=5,
                booked_at=T0,
            )
        )
    with pytest.raises(ClearingError) as err:
        run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings)
    assert err.value.code == "no_settlement_account"
    assert str(stranger) in err.value.detail
    _nothing_written(engine, settings)


def test_earlier_batch_open_blocks_the_next_day(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    book_two_days(engine)

    def broken(*_args: object, **_kw: object) -> list[str]:
        return ["injected failure"]

    monkeypatch.setattr("settlement.service.check_published_files", broken)
    with pytest.raises(ClearingError) as err:
        run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings)
    assert err.value.code == "settlement_invariant"
    with transaction(engine) as session:
        stuck = repo.get_batch(session, "CNY", DAY1)
        assert stuck is not None
        assert stuck.state == "files_written"
        assert stuck.error is not None
        assert "injected failure" in stuck.error
    with pytest.raises(ClearingError) as err:
        run_batch(engine, DAY2, "CNY", AFTER_DAY2, settings)
    assert err.value.code == "earlier_batch_open"
    with transaction(engine) as session:
        assert repo.get_batch(session, "CNY", DAY2) is None
    # the operator fixes the cause and reruns: it resumes and publishes
    monkeypatch.undo()
    done = run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings)
    assert done.state == "published"
    assert done.error is None


def test_second_runner_gets_batch_running(engine: Engine, settings: Settings) -> None:
    book_two_days(engine)
    with runner_lock(engine, settings.settlement_dir):
        with pytest.raises(BatchRunning) as err:
            run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings)
        assert err.value.code == "batch_running"
    _nothing_written(engine, settings)
    assert run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings).state == "published"


def test_empty_day_settles_with_a_platform_statement(engine: Engine, settings: Settings) -> None:
    book_two_days(engine)
    run_batch(engine, DAY1, "CNY", AFTER_DAY2 + timedelta(days=2), settings)
    run_batch(engine, DAY2, "CNY", AFTER_DAY2 + timedelta(days=2), settings)
    empty = run_batch(
        engine, DAY2 + timedelta(days=1), "CNY", AFTER_DAY2 + timedelta(days=2), settings
    )
    assert empty.state == "published"
    assert empty.line_count == 0
    assert [p.party_kind for p in empty.positions] == ["platform"]
    public = load_or_create(settings.platform_key_path).public_key
    assert verify_tree(Path(empty.directory), public)[1] == []


def test_windows_follow_daylight_saving() -> None:
    # New York springs forward on 2026-03-08: that business day has 23 hours, and the
    # autumn one (2026-11-01) 25; each window starts where the one before it ends.
    spring = business_window(date(2026, 3, 8), "America/New_York", "00:00")
    autumn = business_window(date(2026, 11, 1), "America/New_York", "00:00")
    assert spring[1] - spring[0] == timedelta(hours=23)
    assert autumn[1] - autumn[0] == timedelta(hours=25)
    assert business_window(date(2026, 3, 9), "America/New_York", "00:00")[0] == spring[1]
    # an evening cut-off closes the day on the same calendar day
    start, end = business_window(date(2026, 3, 2), "Asia/Shanghai", "22:00")
    assert (start, end) == (
        datetime(2026, 3, 1, 14, 0, tzinfo=UTC),
        datetime(2026, 3, 2, 14, 0, tzinfo=UTC),
    )
    assert business_date_of(end - timedelta(microseconds=1), "Asia/Shanghai", "22:00") == date(
        2026, 3, 2
    )
    assert business_date_of(end, "Asia/Shanghai", "22:00") == date(2026, 3, 3)


def test_file_hashes_recorded_match_disk(engine: Engine, settings: Settings) -> None:
    book_two_days(engine)
    batch = run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings)
    with transaction(engine) as session:
        rows = repo.files(session, batch.id)
    assert rows
    for row in rows:
        data = (settings.settlement_dir / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert len(data) == row.size


def test_run_refuses_an_unknown_engine_in_one_line(db_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from clearing.app.cli import app as cli

    result = CliRunner().invoke(
        cli,
        ["settlement", "run", "--date", DAY1.isoformat(), "--engine", "dask"],
        env={"CLEARING_DATABASE_URL": db_url, "CLEARING_SETTLEMENT_DIR": str(tmp_path / "s")},
    )
    assert result.exit_code == 2
    assert "one of pandas, spark, not 'dask'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "s").exists()
