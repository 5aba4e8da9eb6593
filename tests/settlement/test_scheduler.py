"""The settlement scheduler: missed business days are caught up at start, in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, inspect

from clearing.app.scheduler import JOBS_TABLE, start_scheduler
from clearing.core.db import transaction
from settlement import repository as repo
from settlement.tasks import catch_up, due_dates
from tests.settlement.settlement_world import (
    AFTER_DAY2,
    DAY1,
    DAY2,
    book_two_days,
    settlement_settings,
)


def test_due_dates_wait_for_cutoff_plus_grace(engine: Engine, db_url: str, tmp_path: Path) -> None:
    settings = settlement_settings(db_url, tmp_path)
    book_two_days(engine)
    day2_closes = datetime(2026, 11, 21, 16, 0, tzinfo=UTC)
    assert due_dates(engine, "CNY", day2_closes + timedelta(minutes=9), settings) == [DAY1]
    assert due_dates(engine, "CNY", day2_closes + timedelta(minutes=10), settings) == [DAY1, DAY2]
    assert due_dates(engine, "EUR", AFTER_DAY2, settings) == []


def test_missed_days_are_caught_up_at_start(engine: Engine, db_url: str, tmp_path: Path) -> None:
    settings = settlement_settings(db_url, tmp_path)
    book_two_days(engine)
    # the platform was down for both cut-offs; it starts two days later
    scheduler = start_scheduler(settings, now=AFTER_DAY2 + timedelta(days=2))
    try:
        jobs = {job.id for job in scheduler.get_jobs()}
        assert "settlement-daily-CNY" in jobs
        job = scheduler.get_job("settlement-daily-CNY")
        local = job.next_run_time.astimezone(job.trigger.timezone)
        assert (local.hour, local.minute) == (0, 10)
    finally:
        scheduler.shutdown(wait=False)
    with transaction(engine) as session:
        batches = repo.list_batches(session)
    # DAY1, DAY2, and the two empty days after them, all published, in sequence
    assert [(b.business_date, b.state, b.sequence) for b in reversed(batches)] == [
        (DAY1 + timedelta(days=n), "published", n + 1) for n in range(4)
    ]
    # the jobs live in the platform's database, so a restart finds them
    assert JOBS_TABLE in inspect(engine).get_table_names()
    again = catch_up(engine, settings, AFTER_DAY2 + timedelta(days=2))
    assert again.settled == []
    assert again.errors == []


def test_the_scheduler_settles_on_the_engine_its_setting_names(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """CLEARING_SETTLEMENT_ENGINE=spark: caught-up days go through the Parquet export."""
    import dataclasses

    settings = dataclasses.replace(settlement_settings(db_url, tmp_path), settlement_engine="spark")
    book_two_days(engine)
    result = catch_up(engine, settings, AFTER_DAY2)
    assert result.errors == []
    assert [(b.business_date, b.state) for b in result.settled] == [
        (DAY1, "published"),
        (DAY2, "published"),
    ]
    window = settings.settlement_dir / ".window" / "currency=CNY"
    assert sorted(p.name for p in window.iterdir()) == [
        f"business_date={DAY1.isoformat()}",
        f"business_date={DAY2.isoformat()}",
    ]
