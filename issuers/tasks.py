"""Scheduled jobs of the issuers' programs: the tiers' anniversary review and the daily expiry
notices.

The review runs every hour: each run reviews, in every tiered program, the members whose
anniversary of enrolment is today in the issuer's zone, so an issuer anywhere is reviewed within
the hour after its day begins. A member already reviewed today is not moved again unless what it
qualifies on changed meanwhile (it is still its anniversary): running twice is harmless.

Expiry notices are recorded daily for every program with a notice window; delivering them is the
outbound events' job, here they are recorded and readable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.errors import Conflict
from clearing.core.tasks import ScheduledJob
from clearing.core.timeutil import utcnow
from issuers import qualification
from issuers.expiring import notice_programs, record_notices

log = logging.getLogger("issuers.tasks")

REVIEW_CHUNK = 5_000


class ReviewTooEarly(Conflict):
    code = "anniversary_not_begun"
    title = "The anniversary day has not begun in the issuer's zone"


@dataclass
class ReviewOutcome:
    """What one anniversary review did, per program code."""

    reviewed: dict[str, int] = field(default_factory=dict)
    upgraded: dict[str, int] = field(default_factory=dict)
    downgraded: dict[str, int] = field(default_factory=dict)
    days: dict[str, date] = field(default_factory=dict)


def run_review(
    engine: Engine,
    now: datetime,
    day: date | None = None,
    programs: list[str] | None = None,
    chunk: int = REVIEW_CHUNK,
) -> ReviewOutcome:
    """Re-qualify, as of `now`, the members whose anniversary is `day` (default: today in each
    issuer's zone), a chunk of members per transaction."""
    with transaction(engine) as session:
        tiered = qualification.tiered_programs(session, programs)
    outcome = ReviewOutcome()
    for program in tiered:
        reviewed_day = day or qualification.local_today(now, program.zone)
        begins = datetime.combine(reviewed_day, time(0), tzinfo=ZoneInfo(program.zone))
        if begins.astimezone(UTC) > now:
            raise ReviewTooEarly(
                f"{reviewed_day} has not begun in {program.zone} (program {program.code})"
            )
        outcome.days[program.code] = reviewed_day
        counts = {"reviewed": 0, qualification.UPGRADE: 0, qualification.DOWNGRADE: 0}
        after = None
        while True:
            with transaction(engine) as session:
                ids = qualification.anniversary_members(
                    session, program, reviewed_day, after, chunk
                )
                moves = qualification.review_chunk(session, ids, now) if ids else []
            counts["reviewed"] += len(ids)
            for move in moves:
                counts[move.reason] += 1
            if len(ids) < chunk:
                break
            after = ids[-1]
            log.info(
                "tiers review %s %s: %d members so far",
                program.code,
                reviewed_day,
                counts["reviewed"],
            )
        outcome.reviewed[program.code] = counts["reviewed"]
        outcome.upgraded[program.code] = counts[qualification.UPGRADE]
        outcome.downgraded[program.code] = counts[qualification.DOWNGRADE]
    return outcome


def review_tiers(settings: Settings, *, now: datetime | None = None) -> None:
    """The scheduled job: opens its own engine, reviews today's anniversaries, logs the counts."""
    engine = settings.open_engine()
    try:
        done = run_review(engine, utcnow() if now is None else now)
    finally:
        engine.dispose()
    for code, reviewed in done.reviewed.items():
        log.info(
            "tiers review %s %s: %d reviewed, %d up, %d down",
            code,
            done.days[code],
            reviewed,
            done.upgraded[code],
            done.downgraded[code],
        )


def tier_jobs(settings: Settings) -> list[ScheduledJob]:
    """The tiers' anniversary review, every hour."""
    return [
        ScheduledJob(
            "tiers-anniversary-review",
            "tiers: re-qualify members on their anniversary",
            review_tiers,
            (settings,),
            every=timedelta(hours=1),
        )
    ]


NOTICES_AT = time(6, 0)
"""When the daily notices are recorded (platform zone): before the issuers' working day."""


def notice_jobs(settings: Settings) -> list[ScheduledJob]:
    """The daily expiry notices."""
    return [
        ScheduledJob(
            "issuers-expiry-notices",
            "record expiry notices of members whose points expire soon",
            notices_job,
            (settings,),
            daily_at=NOTICES_AT,
        )
    ]


def jobs(settings: Settings, engine: Engine) -> list[ScheduledJob]:
    """The issuers' jobs."""
    del engine  # each job opens its own
    return [*tier_jobs(settings), *notice_jobs(settings)]


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
