"""Scheduled jobs of the ledger core: release expired holds, post the expiry of due lots."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine

from clearing.config import Settings
from clearing.db import transaction
from clearing.ledger import Ledger, expire_due_lots
from clearing.timeutil import utcnow

log = logging.getLogger("clearing.tasks")


def run_expiry(engine: Engine, now: datetime, limit: int = 10_000) -> tuple[int, int]:
    """Release holds past their time-to-live and expire due lots, a chunk per transaction.

    Returns (holds released, points expired). Safe to run twice or concurrently with postings:
    each chunk locks the member balances it changes.
    """
    released = expired = 0
    while True:
        with transaction(engine) as session:
            holds = Ledger(session).release_expired_holds(now, limit=limit)
            points = expire_due_lots(session, now, limit)
        released += holds
        expired += points
        if holds < limit and points == 0:
            return released, expired


def expire_due(settings: Settings) -> None:
    """The scheduled job: opens its own engine, runs the expiry as of now, logs the outcome."""
    engine = settings.open_engine()
    try:
        released, expired = run_expiry(engine, utcnow())
    finally:
        engine.dispose()
    log.info("expiry: %d holds released, %d points expired", released, expired)
