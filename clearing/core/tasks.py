"""Scheduled jobs: what a job is, and the ledger core's own (release expired holds, expire lots).

Each package declares its jobs in its ``tasks.py`` (a ``jobs(settings, engine)`` function); the
app's scheduler (``clearing.app.scheduler``) collects and runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy import Engine

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.ledger import Ledger
from clearing.core.ledger.expiry import ExpiryChunk, expire_chunk
from clearing.core.timeutil import utcnow

log = logging.getLogger("clearing.core.tasks")


@dataclass(frozen=True)
class ScheduledJob:
    """A job a package declares: every `every`, daily at `daily_at` (platform zone), or once at start.

    A job runs in a process of its own choosing: it opens its own engine and session, and is safe
    to run twice. A job run once at start takes `now` as a keyword, so a caller can run it as of a
    given time.
    """

    id: str
    name: str
    func: Callable[..., None]
    args: tuple[object, ...] = ()
    every: timedelta | None = None
    daily_at: time | None = None

    @property
    def at_start(self) -> bool:
        """Whether the job runs once when the scheduler starts (it has no trigger)."""
        return self.every is None and self.daily_at is None


def jobs(settings: Settings, engine: Engine) -> list[ScheduledJob]:
    """The ledger's housekeeping, every five minutes."""
    del engine  # the expiry job opens its own
    return [
        ScheduledJob(
            "ledger-expiry",
            "release expired holds, expire due lots",
            expire_due,
            (settings,),
            every=timedelta(minutes=5),
        )
    ]


def run_expiry(
    engine: Engine,
    now: datetime,
    limit: int = 10_000,
    *,
    chunk: int = 5000,
    progress: Callable[[ExpiryChunk], None] | None = None,
) -> tuple[int, int]:
    """Release holds past their time-to-live, then expire due lots set-based, a chunk of member
    accounts per transaction (`clearing.core.ledger.expiry.expire_chunk`).

    Returns (holds released, points expired). Resumable: each chunk commits on its own, and a run
    stopped half-way is finished by the next (expired lots have nothing left to expire). Safe to
    run concurrently with postings: each chunk locks the member balances it changes. `progress`
    hears of each committed chunk.
    """
    released = 0
    while True:
        with transaction(engine) as session:
            holds = Ledger(session).release_expired_holds(now, limit=limit)
        released += holds
        if holds < limit:
            break
    expired = members = 0
    after = None
    while True:
        with transaction(engine) as session:
            done = expire_chunk(session, now, after, chunk)
        if done is None:
            return released, expired
        after = done.last_account
        expired += done.points
        members += done.members
        log.info(
            "expiry: %d members, %d points expired so far (chunk: %d members, %d lots)",
            members,
            expired,
            done.members,
            done.lots,
        )
        if progress is not None:
            progress(done)


def expire_due(settings: Settings) -> None:
    """The scheduled job: opens its own engine, runs the expiry as of now, logs the outcome."""
    engine = settings.open_engine()
    try:
        released, expired = run_expiry(engine, utcnow())
    finally:
        engine.dispose()
    log.info("expiry: %d holds released, %d points expired", released, expired)
