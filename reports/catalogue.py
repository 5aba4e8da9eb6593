"""Every report by name: the API, the CLI, the exports and the console read this one table."""

from __future__ import annotations

from reports.flows import FLOW_REPORTS
from reports.liability import LEDGER_REPORTS
from reports.query import ReportSpec


def _by_name(*specs: ReportSpec) -> dict[str, ReportSpec]:
    table: dict[str, ReportSpec] = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"report {spec.name!r} is defined twice")
        table[spec.name] = spec
    return table


REPORTS: dict[str, ReportSpec] = _by_name(*LEDGER_REPORTS, *FLOW_REPORTS)
