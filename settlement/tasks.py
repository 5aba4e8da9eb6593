"""Scheduled settlement: a daily job per currency after the cut-off, and catch-up at start.

The app's scheduler (``clearing.app.scheduler``) runs what ``jobs`` declares and keeps the jobs in
the platform's own database, so a job missed while every instance was down is still there,
overdue, when one starts again; on top of that, start-up settles every business day due since
the last published batch. Running twice is
harmless: a batch runner holds the settlement lock, and a published batch is returned as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from sqlalchemy import Engine

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.money import is_known_currency
from clearing.core.tasks import ScheduledJob
from clearing.core.timeutil import business_date_of, parse_cutoff, utcnow
from settlement import repository as repo
from settlement.lock import BatchRunning
from settlement.schemas import BatchOut
from settlement.service import run_batch

log = logging.getLogger("settlement.tasks")

GRACE = timedelta(minutes=10)


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


def settle_due(
    settings: Settings,
    grace_minutes: int,
    currency: str | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """The scheduled job: opens its own engine, settles what is due (as of `now`), logs it."""
    engine = settings.open_engine()
    try:
        done = catch_up(
            engine,
            settings,
            utcnow() if now is None else now,
            grace=timedelta(minutes=grace_minutes),
            currencies=None if currency is None else [currency],
        )
    finally:
        engine.dispose()
    for batch in done.settled:
        log.info("settlement %s %s: %s", batch.id, batch.state, batch.directory)
    for error in done.errors:
        log.error("settlement: %s", error)


def job_time(settings: Settings, grace: timedelta) -> time:
    """Local time of day of the daily job: the cut-off plus the grace period."""
    return (datetime.combine(date(2000, 1, 1), parse_cutoff(settings.cutoff)) + grace).time()


def jobs(settings: Settings, engine: Engine) -> list[ScheduledJob]:
    """Settlement's jobs: the daily batch of every currency, and a catch-up at start."""
    grace_minutes = settings.settlement_grace_minutes
    with transaction(engine) as session:
        currencies = repo.settlement_currencies(session)
    daily_at = job_time(settings, timedelta(minutes=grace_minutes))
    return [
        *(
            ScheduledJob(
                f"settlement-daily-{currency}",
                f"daily settlement {currency}",
                settle_due,
                (settings, grace_minutes, currency),
                daily_at=daily_at,
            )
            for currency in currencies
        ),
        # At start, as a job of its own: start-up (of the API, say) does not wait for a long batch.
        ScheduledJob(
            "settlement-catch-up",
            "settlement catch-up at start",
            settle_due,
            (settings, grace_minutes, None),
        ),
    ]
