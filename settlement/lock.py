"""One settlement runner at a time, across processes and app instances.

PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a connection held for the
whole run. The lock belongs to the database session, so a runner killed with SIGKILL loses it the
moment its connection drops: no lease to expire, no stale holder to clean up.

SQLite (one host by nature): an exclusive `flock` on a file next to the database, which the
kernel likewise releases when the holding process dies.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

from clearing.core.db import is_postgres
from clearing.core.errors import Conflict

LOCK_KEY = 0x5E771E_0001
"""The advisory lock id of the settlement runner (any bigint no other component uses)."""


class BatchRunning(Conflict):
    code = "batch_running"
    title = "A settlement batch is already running"


def lock_file(engine: Engine, fallback_dir: Path) -> Path:
    """The lock file of a SQLite database (beside it; in `fallback_dir` for in-memory ones)."""
    database = engine.url.database
    if database and database != ":memory:":
        return Path(f"{database}.settlement.lock")
    return fallback_dir / ".settlement.lock"


@contextmanager
def runner_lock(engine: Engine, fallback_dir: Path) -> Iterator[None]:
    """Hold the settlement runner lock, or raise BatchRunning at once if another process has it."""
    if is_postgres(engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
            if not got:
                raise BatchRunning("another settlement runner holds the lock; try again later")
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
        return
    path = lock_file(engine, fallback_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchRunning(
                "another settlement runner holds the lock; try again later"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
