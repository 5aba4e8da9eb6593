"""The issuers' scheduled jobs: record expiry notices daily, for every program with a notice
window. Delivery of the notices is the outbound events' job; here they are recorded and readable.
"""

from __future__ import annotations

import logging
from datetime import datetime, time

from sqlalchemy import Engine

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.tasks import ScheduledJob
from clearing.core.timeutil import utcnow
from issuers.expiring import notice_programs, record_notices

log = logging.getLogger("issuers.tasks")

NOTICES_AT = time(6, 0)
"""When the daily notices are recorded (platform zone): before the issuers' working day."""


def jobs(settings: Settings, engine: Engine) -> list[ScheduledJob]:
    """The daily expiry notices."""
    del engine  # the job opens its own
    return [
        ScheduledJob(
            "issuers-expiry-notices",
            "record expiry notices of members whose points expire soon",
            notices_job,
            (settings,),
            daily_at=NOTICES_AT,
        )
    ]


def run_notices(engine: Engine, now: datetime) -> int:
    """Record the notices of every program that asks for them, a transaction per program;
    returns how many were recorded. Running twice records nothing new."""
    with transaction(engine) as session:
        programs = notice_programs(session)
    recorded = 0
    for program_id in programs:
        with transaction(engine) as session:
            recorded += record_notices(session, program_id, now)
    return recorded


def notices_job(settings: Settings) -> None:
    """The scheduled job: opens its own engine, records the notices as of now, logs the count."""
    engine = settings.open_engine()
    try:
        recorded = run_notices(engine, utcnow())
    finally:
        engine.dispose()
    log.info("expiry notices: %d recorded", recorded)
