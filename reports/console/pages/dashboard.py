"""The dashboard: yesterday's settlement position, the points liability, today's activity, and
two charts (liability and activity over the last 30 days) drawn on the server as SVG."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from reports.console import charts, figures, finance, i18n
from reports.console.roles import Page
from reports.console.web import Viewing, allowed, render

router = APIRouter()
Everyone = Annotated[Viewing, Depends(allowed(Page.DASHBOARD))]
KIND_NAMES = {
    "accruals": "Accruals",
    "conversions": "Conversions",
    "checkouts": "Checkouts",
}
"""Each kind of activity's name as the dashboard shows it (translated like any message)."""


def _scope(viewer: Viewing) -> uuid.UUID | None:
    return None if viewer.is_platform else viewer.org_id


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, viewer: Everyone, session: SessionDep) -> HTMLResponse:
    """The first page after sign-in."""
    today = figures.business_day(utcnow(), viewer.zone)
    scope = _scope(viewer)
    yesterday = today - timedelta(days=1)
    return render(
        request,
        "dashboard.html",
        viewer=viewer,
        today=today,
        yesterday=yesterday,
        positions=finance.latest_positions(session, scope, yesterday),
        liability=figures.liability(session, scope, today),
        activity=figures.activity_on(session, scope, today),
        kind_names=KIND_NAMES,
        chart_days=figures.CHART_DAYS,
    )


@router.get("/charts/{name}.svg")
def chart(
    viewer: Everyone, session: SessionDep, name: Literal["liability", "activity"]
) -> Response:
    """A dashboard chart as SVG, of the viewer's own figures (the platform's users: all)."""
    today = figures.business_day(utcnow(), viewer.zone)
    scope = _scope(viewer)
    if name == "liability":
        svg = charts.lines(figures.liability_by_day(session, scope, today))
    else:
        first = today - timedelta(days=figures.CHART_DAYS - 1)
        found = figures.activity_by_day(session, scope, first, today)
        days = [first + timedelta(days=i) for i in range(figures.CHART_DAYS)]
        gettext = i18n.translations(viewer.locale).gettext
        svg = charts.bars(
            days,
            {
                gettext(KIND_NAMES[kind]): [a.count if (a := per_day.get(d)) else 0 for d in days]
                for kind, per_day in found.items()
            },
        )
    return Response(
        svg,
        media_type="image/svg+xml",
        headers={"content-security-policy": charts.CHART_CSP},
    )
