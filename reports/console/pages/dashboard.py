"""The dashboard: yesterday's position, the points liability and today's activity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from reports.console.roles import Page
from reports.console.web import Viewing, allowed, render

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def dashboard(
    request: Request, viewer: Annotated[Viewing, Depends(allowed(Page.DASHBOARD))]
) -> HTMLResponse:
    """The first page after sign-in."""
    return render(request, "dashboard.html", viewer=viewer)
