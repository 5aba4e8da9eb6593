"""The console's pages, one module each; `PAGE_ROUTERS` is every page's router, in nav order."""

from __future__ import annotations

from fastapi import APIRouter

from reports.console.pages.audit import router as audit_router
from reports.console.pages.batches import router as batches_router
from reports.console.pages.dashboard import router as dashboard_router
from reports.console.pages.members import router as members_router
from reports.console.pages.parties import router as parties_router
from reports.console.pages.positions import router as positions_router
from reports.console.pages.reports import router as reports_router
from reports.console.pages.requests import router as requests_router
from reports.console.pages.reviews import router as reviews_router
from reports.console.pages.rules import router as rules_router

PAGE_ROUTERS: tuple[APIRouter, ...] = (
    dashboard_router,
    batches_router,
    positions_router,
    reports_router,
    reviews_router,
    rules_router,
    parties_router,
    members_router,
    audit_router,
    requests_router,
)
