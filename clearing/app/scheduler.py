"""The scheduler: runs the jobs every package declares in its ``tasks.py``, kept in the database.

APScheduler keeps the jobs in a table of the platform's own database (SQLAlchemyJobStore), so a
job missed while every instance was down is still there, overdue, when one starts again.
"""

from __future__ import annotations

from datetime import datetime
from types import ModuleType
from zoneinfo import ZoneInfo

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

import clearing.core.tasks
import issuers.tasks
import risk.tasks
import settlement.tasks
from clearing.app.policy import open_engine
from clearing.core.config import Settings
from clearing.core.tasks import ScheduledJob

TASKS: tuple[ModuleType, ...] = (
    clearing.core.tasks,
    settlement.tasks,
    risk.tasks,
    issuers.tasks,
)
"""Every package with scheduled jobs; each has ``jobs(settings, engine)``."""
JOBS_TABLE = "settlement_scheduler_jobs"
"""The job store's table; its name predates the other packages' jobs and databases hold it."""


def declared_jobs(settings: Settings, engine: Engine) -> list[ScheduledJob]:
    """The jobs of every package, in the order of ``TASKS``."""
    return [job for module in TASKS for job in module.jobs(settings, engine)]


def _trigger(job: ScheduledJob, zone: ZoneInfo) -> BaseTrigger | None:
    if job.every is not None:
        return IntervalTrigger(seconds=job.every.total_seconds(), timezone=zone)
    if job.daily_at is not None:
        return CronTrigger(hour=job.daily_at.hour, minute=job.daily_at.minute, timezone=zone)
    return None  # APScheduler runs a job without a trigger once, now


def build_scheduler(
    settings: Settings, engine: Engine, jobs: list[ScheduledJob]
) -> BackgroundScheduler:
    """A BackgroundScheduler (not started) holding `jobs` in the job store of `engine`."""
    zone = ZoneInfo(settings.zone)
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=zone,
    )
    for job in jobs:
        scheduler.add_job(
            job.func,
            _trigger(job, zone),
            args=list(job.args),
            id=job.id,
            name=job.name,
            replace_existing=True,
        )
    return scheduler


def start_scheduler(settings: Settings, *, now: datetime | None = None) -> BackgroundScheduler:
    """Start every declared job; returns the scheduler.

    With `now`, the jobs that run once at start run at once, here, as of `now`; without it they
    run as the scheduler's first jobs, so that start-up (of the API, say) does not wait for them.
    """
    engine = open_engine(settings)
    jobs = declared_jobs(settings, engine)
    if now is not None:
        for job in jobs:
            if job.at_start:
                job.func(*job.args, now=now)
        jobs = [job for job in jobs if not job.at_start]
    scheduler = build_scheduler(settings, engine, jobs)
    scheduler.start()
    return scheduler
