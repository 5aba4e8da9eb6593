"""Routes of the reports: the list, and one report as JSON or as a CSV, XLSX or Parquet file.

The operator reads every party's figures, or one party's with `org_id`; a party reads its own
figures only (an `org_id` other than its own is refused with 403 `report_of_another_party`).
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from clearing.core.schemas import Code
from clearing.web.api import SessionDep, json_response
from clearing.web.auth import CallerDep
from reports.catalogue import REPORTS
from reports.exports import EXPORTS, cell_text, export_bytes, export_filename
from reports.query import ReportTable
from reports.schemas import ReportColumnOut, ReportListItem, ReportOut
from reports.service import run_report, scope_of

router = APIRouter(prefix="/v1/reports", tags=["reports"])

ReportName = Annotated[str, Path(pattern=r"^[a-z0-9_]{1,60}$")]
Format = Literal["json", "csv", "xlsx", "parquet"]


def _json_value(value: Any) -> Any:
    """Dates ISO and decimals as exact strings; integers and text as they are."""
    if isinstance(value, date | Decimal):
        return cell_text(value)
    return value


def report_out(table: ReportTable) -> ReportOut:
    """A report's table as the API's JSON shape."""
    return ReportOut(
        report=table.report,
        columns=[ReportColumnOut(name=c.name, kind=c.kind.value) for c in table.columns],
        rows=[{k: _json_value(v) for k, v in record.items()} for record in table.records()],
    )


@router.get("")
def list_reports(_caller: CallerDep) -> list[ReportListItem]:
    """Every report by name, with its title and whether `program` narrows it."""
    return [
        ReportListItem(name=s.name, title=s.title, per_program=s.per_program)
        for s in REPORTS.values()
    ]


@router.get(
    "/{name}",
    responses={200: {"content": {f.media_type: {} for f in EXPORTS.values()}}},
)
def get_report(
    caller: CallerDep,
    session: SessionDep,
    name: ReportName,
    date_from: Annotated[date, Query(description="First business date, YYYY-MM-DD")],
    date_to: Annotated[date, Query(description="Last business date (included)")],
    program: Annotated[Code | None, Query(description="One program, where per program")] = None,
    org_id: Annotated[
        uuid.UUID | None, Query(description="Operator only: one party's figures")
    ] = None,
    fmt: Annotated[
        Format, Query(alias="format", description="json, or a file: csv, xlsx, parquet")
    ] = "json",
) -> Response:
    """One report over [date_from, date_to] (business dates in the viewer's zone): as JSON, or
    as a file to download."""
    table = run_report(session, name, date_from, date_to, scope_of(caller, org_id), program)
    if fmt == "json":
        return json_response(report_out(table))
    filename = export_filename(table, date_from, date_to, fmt)
    return Response(
        export_bytes(table, fmt),
        media_type=EXPORTS[fmt].media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
