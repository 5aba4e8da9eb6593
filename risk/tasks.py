"""Risk's scheduled jobs: restrict parties that have not paid a published batch by the deadline.

Safe to run twice or concurrently with itself: a restriction is one row per party and batch,
written once (a second run finds it and adds nothing).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Engine

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.tasks import ScheduledJob
from clearing.core.timeutil import utcnow
from risk.exposure import restrict_overdue
from risk.schemas import SettlementRestrictionOut

log = logging.getLogger("risk.tasks")

OVERDUE_EVERY = timedelta(minutes=5)
"""How often the payment deadline is checked: a party is restricted at most this late."""


def run_overdue(
    engine: Engine, settings: Settings, now: datetime
) -> list[SettlementRestrictionOut]:
    """Record the restrictions due as of `now`, in one transaction; returns them."""
    with transaction(engine) as session:
        return restrict_overdue(session, now, timedelta(hours=settings.payment_deadline_hours))


def restrict_due(settings: Settings, *, now: datetime | None = None) -> None:
    """The scheduled job: opens its own engine, restricts what is overdue (as of `now`), logs it."""
    engine = settings.open_engine()
    try:
        made = run_overdue(engine, settings, utcnow() if now is None else now)
    finally:
        engine.dispose()
    for restriction in made:
        log.warning(
            "restricted %s: batch %s unpaid since %s",
            restriction.org_id,
            restriction.batch_id,
            restriction.due_at.isoformat(),
        )


def jobs(settings: Settings, engine: Engine) -> list[ScheduledJob]:
    """Risk's jobs: the payment deadline check, every five minutes."""
    del engine  # the job opens its own
    return [
        ScheduledJob(
            "risk-payment-deadline",
            "restrict parties past the settlement payment deadline",
            restrict_due,
            (settings,),
            every=OVERDUE_EVERY,
        )
    ]
