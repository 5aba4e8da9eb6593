"""Reports: every report of the catalogue, run for a date range (and a program), shown as a table
and downloaded as CSV, XLSX or Parquet; a party's user reads only its own figures."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from clearing.core.errors import InvalidInput
from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from clearing.web.context import Caller
from reports.catalogue import REPORTS
from reports.console.accounts import record
from reports.console.directory import directory
from reports.console.roles import Page
from reports.console.web import Viewing, allowed, render
from reports.exports import EXPORTS, export_bytes, export_filename
from reports.query import ReportTable
from reports.service import report_spec, run_report, scope_of

router = APIRouter()
Reader = Annotated[Viewing, Depends(allowed(Page.REPORTS))]
SHOWN_ROWS = 1_000
"""Rows a page shows; the downloads hold every row."""


@dataclass(frozen=True, slots=True)
class Asked:
    """The report the form asks for, as the viewer may see it."""

    name: str
    date_from: date
    date_to: date
    org_id: uuid.UUID | None
    program: str | None


def _day(text: str, field: str, default: date) -> date:
    try:
        return date.fromisoformat(text) if text else default
    except ValueError:
        raise InvalidInput(f"{field} is not a date (YYYY-MM-DD)", field=field) from None


def _asked(
    viewer: Viewing, report: str, day_from: str, day_to: str, party: str, program: str
) -> Asked:
    yesterday = utcnow().astimezone(ZoneInfo(viewer.zone)).date() - timedelta(days=1)
    try:
        chosen = uuid.UUID(party) if party else None
    except ValueError:
        raise InvalidInput("party is not an organisation id", field="party") from None
    # The same rule as the API's: a party reads only its own figures, the operator any or all.
    reader = Caller(viewer.org_id, viewer.signed_in.org_kind, f"console:{viewer.signed_in.id}")
    spec = report_spec(report)
    return Asked(
        name=spec.name,
        date_from=_day(day_from, "from", yesterday),
        date_to=_day(day_to, "to", yesterday),
        org_id=scope_of(reader, chosen),
        program=(program or None) if spec.per_program else None,
    )


def _run(session: SessionDep, asked: Asked) -> ReportTable:
    return run_report(
        session, asked.name, asked.date_from, asked.date_to, asked.org_id, asked.program
    )


@router.get("/reports", response_class=HTMLResponse)
def reports_page(
    request: Request,
    viewer: Reader,
    session: SessionDep,
    report: Annotated[str, Query(max_length=60)] = "",
    day_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    day_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    party: Annotated[str, Query(max_length=36)] = "",
    program: Annotated[str, Query(max_length=40)] = "",
) -> HTMLResponse:
    """The catalogue, the form, and the chosen report's table with its downloads."""
    names = directory(session, None if viewer.is_platform else viewer.org_id)
    asked = _asked(viewer, report, day_from, day_to, party, program) if report else None
    table = _run(session, asked) if asked else None
    columns = [c.name for c in table.columns] if table else []
    yesterday = utcnow().astimezone(ZoneInfo(viewer.zone)).date() - timedelta(days=1)
    return render(
        request,
        "reports.html",
        viewer=viewer,
        reports=list(REPORTS.values()),
        names=names,
        asked=asked,
        table=table,
        rows=table.rows[:SHOWN_ROWS] if table else [],
        currency_at=columns.index("currency") if "currency" in columns else None,
        formats=list(EXPORTS),
        default_day=yesterday,
        query=request.url.query,
    )


@router.get("/reports/download")
def download_report(
    viewer: Reader,
    session: SessionDep,
    report: Annotated[str, Query(max_length=60)],
    fmt: Annotated[str, Query(alias="format", max_length=8)],
    day_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    day_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    party: Annotated[str, Query(max_length=36)] = "",
    program: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    """The report as a file (CSV, XLSX or Parquet); the download is recorded."""
    if fmt not in EXPORTS:
        raise InvalidInput(f"format is one of {', '.join(EXPORTS)}", field="format")
    asked = _asked(viewer, report, day_from, day_to, party, program)
    table = _run(session, asked)
    filename = export_filename(table, asked.date_from, asked.date_to, fmt)
    record(
        session,
        viewer.signed_in,
        "report_downloaded",
        asked.name,
        {
            "format": fmt,
            "from": asked.date_from.isoformat(),
            "to": asked.date_to.isoformat(),
            "org_id": str(asked.org_id) if asked.org_id else None,
            "program": asked.program,
            "rows": len(table.rows),
        },
        utcnow(),
    )
    return Response(
        export_bytes(table, fmt),
        media_type=EXPORTS[fmt].media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
