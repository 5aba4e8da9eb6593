"""A settled world for the finance pages: two business days booked through the real services
and settled by the real batch runner, on an app whose settings carry the batch's zone."""

from __future__ import annotations

from fastapi import FastAPI

from settlement.service import run_batch
from tests.settlement.settlement_world import AFTER_DAY2, DAY1, DAY2, Days, book_two_days


def settle_two_days(app: FastAPI) -> Days:
    """Book tests.settlement.settlement_world's two days and publish both batches."""
    days = book_two_days(app.state.engine)
    settings = app.state.settings
    run_batch(app.state.engine, DAY1, "CNY", AFTER_DAY2, settings)
    run_batch(app.state.engine, DAY2, "CNY", AFTER_DAY2, settings)
    return days


def batch_id(day: object) -> str:
    """The deterministic id of a CNY batch (`SB-{currency}-{YYYYMMDD}`)."""
    return f"SB-CNY-{str(day).replace('-', '')}"
