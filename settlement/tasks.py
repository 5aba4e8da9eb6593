"""Scheduled settlement: a daily job per currency after the cut-off, and catch-up at start.

APScheduler keeps its jobs in a table of the platform's own database (SQLAlchemyJobStore), so a
job missed while every instance was down is still there, overdue, when one starts again; on top
of that, start-up settles every business day due since the last published batch. Running twice is
harmless: a batch runner holds the settlement lock, and a published batch is returned as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from clearing.config import Settings
from clearing.db import transaction
from clearing.errors import ClearingError
from clearing.money import is_known_currency
from clearing.tasks import expire_due
from clearing.timeutil import utcnow
from settlement import repository as repo
from settlement.lock import BatchRunning
from settlement.schemas import BatchOut
from settlement.service import business_date_of, parse_cutoff, run_batch

log = logging.getLogger("settlement.tasks")

GRACE = timedelta(minutes=10)
JOBS_TABLE = "settlement_scheduler_jobs"


@dataclass
class CatchUp:
    """What one catch-up pass did."""

    settled: list[BatchOut] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def due_dates(
    engine: Engine, currency: str, now: datetime, settings: Settings, grace: timedelta = GRACE
) -> list[date]:
    """Business days of `currency` closed for at least `grace` and not yet published, in order."""
    with transaction(engine) as session:
        latest = repo.latest_batch(session, currency)
        if latest is not None:
            first = (
                latest.business_date
                if latest.state != "published"
                else latest.business_date + timedelta(days=1)
            )
        else:
            earliest = repo.earliest_obligation(session, currency)
            if earliest is None:
                return []
            first = business_date_of(earliest, settings.zone, settings.cutoff)
    last = business_date_of(now - grace, settings.zone, settings.cutoff) - timedelta(days=1)
    days: list[date] = []
    day = first
    while day <= last:
        days.append(day)
        day += timedelta(days=1)
    return days


def catch_up(
    engine: Engine,
    settings: Settings,
    now: datetime,
    *,
    grace: timedelta = GRACE,
    currencies: list[str] | None = None,
) -> CatchUp:
    """Settle, in order, every due business day of every currency (or of `currencies`)."""
    result = CatchUp()
    if currencies is None:
        with transaction(engine) as session:
            currencies = repo.settlement_currencies(session)
    for currency in currencies:
        if not is_known_currency(currency):
            result.errors.append(f"{currency}: unknown currency, not settled")
            continue
        for day in due_dates(engine, currency, now, settings, grace):
            try:
                result.settled.append(run_batch(engine, day, currency, now, settings))
            except BatchRunning as error:
                result.errors.append(f"{currency} {day}: {error}")
                return result
            except ClearingError as error:
                # Later days cannot be settled before this one; an operator has to look.
                result.errors.append(f"{currency} {day}: {error.code}: {error}")
                log.error("settlement of %s %s stopped: %s", currency, day, error)
                break
            except Exception as error:
                # Anything else (a database error, a file that cannot be written) stops this
                # currency only: the others still settle, and the batch row keeps the error.
                result.errors.append(f"{currency} {day}: {type(error).__name__}: {error}")
                log.exception("settlement of %s %s failed", currency, day)
                break
    return result


def settle_due(settings: Settings, grace_minutes: int, currency: str | None = None) -> None:
    """The scheduled job: opens its own engine, settles what is due, logs the outcome."""
    engine = settings.open_engine()
    try:
        done = catch_up(
            engine,
            settings,
            utcnow(),
            grace=timedelta(minutes=grace_minutes),
            currencies=None if currency is None else [currency],
        )
    finally:
        engine.dispose()
    for batch in done.settled:
        log.info("settlement %s %s: %s", batch.id, batch.state, batch.directory)
    for error in done.errors:
        log.error("settlement: %s", error)


def job_time(settings: Settings, grace: timedelta) -> tuple[int, int]:
    """Local hour and minute of the daily job: the cut-off plus the grace period."""
    at = datetime.combine(date(2000, 1, 1), parse_cutoff(settings.cutoff)) + grace
    return at.hour, at.minute


def build_scheduler(
    settings: Settings,
    engine: Engine,
    *,
    grace_minutes: int = 10,
    currencies: list[str] | None = None,
) -> BackgroundScheduler:
    """A BackgroundScheduler (not started) with the daily job of every currency in the job store."""
    zone = ZoneInfo(settings.zone)
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=zone,
    )
    if currencies is None:
        with transaction(engine) as session:
            currencies = repo.settlement_currencies(session)
    hour, minute = job_time(settings, timedelta(minutes=grace_minutes))
    for currency in currencies:
        scheduler.add_job(
            settle_due,
            CronTrigger(hour=hour, minute=minute, timezone=zone),
            args=[settings, grace_minutes, currency],
            id=f"settlement-daily-{currency}",
            name=f"daily settlement {currency}",
            replace_existing=True,
        )
    # The ledger's own housekeeping rides on the same scheduler and job store.
    scheduler.add_job(
        expire_due,
        IntervalTrigger(minutes=5),
        args=[settings],
        id="ledger-expiry",
        name="release expired holds, expire due lots",
        replace_existing=True,
    )
    return scheduler


def start_scheduler(
    settings: Settings, *, grace_minutes: int = 10, now: datetime | None = None
) -> BackgroundScheduler:
    """Catch up on missed business days, then start the daily jobs; returns the scheduler.

    With `now` the catch-up runs at once, as of `now`; without it, it runs as the scheduler's
    first job so that start-up (of the API, say) does not wait for a long batch.
    """
    engine = settings.open_engine()
    scheduler = build_scheduler(settings, engine, grace_minutes=grace_minutes)
    if now is not None:
        catch_up(engine, settings, now, grace=timedelta(minutes=grace_minutes))
    else:
        scheduler.add_job(
            settle_due,
            args=[settings, grace_minutes, None],
            id="settlement-catch-up",
            name="settlement catch-up at start",
            replace_existing=True,
        )
    scheduler.start()
    return scheduler
