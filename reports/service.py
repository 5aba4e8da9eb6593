"""Running a report by name for a caller: the one path the API, the CLI and the console take."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy.orm import Session

from clearing.core.errors import Forbidden, InvalidInput, NotFound
from clearing.web.context import Caller
from reports.catalogue import REPORTS
from reports.query import ReportQuery, ReportSpec, ReportTable

EARLIEST = date(1970, 1, 1)
LATEST = date(2199, 12, 31)
"""The business dates a report may ask for: well inside what every zone's arithmetic handles."""


class UnknownReport(NotFound):
    code = "unknown_report"
    title = "No such report"


class OtherPartysReport(Forbidden):
    code = "report_of_another_party"
    title = "A party reads only its own figures"


def report_spec(name: str) -> ReportSpec:
    """The report called `name`, or UnknownReport."""
    spec = REPORTS.get(name)
    if spec is None:
        raise UnknownReport(f"no report is called {name!r}", report=name)
    return spec


def scope_of(caller: Caller | None, org_id: uuid.UUID | None) -> uuid.UUID | None:
    """Whose figures a caller reads: the operator (or the platform's own tools, caller None)
    whichever party it names, or every party; any other party only its own."""
    if caller is None or caller.is_platform:
        return org_id
    if org_id is not None and org_id != caller.org_id:
        raise OtherPartysReport("a party reads only its own figures: leave org_id out")
    return caller.org_id


def run_report(
    session: Session,
    name: str,
    date_from: date,
    date_to: date,
    org_id: uuid.UUID | None,
    program_code: str | None = None,
) -> ReportTable:
    """Run the report `name` over [date_from, date_to] as seen by `org_id` (None: every party)."""
    spec = report_spec(name)
    for value, field in ((date_from, "date_from"), (date_to, "date_to")):
        if not EARLIEST <= value <= LATEST:
            raise InvalidInput(f"business dates run from {EARLIEST} to {LATEST}", field=field)
    if program_code is not None and not spec.per_program:
        raise InvalidInput(f"report {name!r} is not per program", field="program")
    return spec.run(session, ReportQuery(date_from, date_to, org_id, program_code))
