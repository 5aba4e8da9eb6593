"""Reports on flows between parties: conversions, checkouts, funded accruals, positions, risk."""

from __future__ import annotations

from reports.query import ReportSpec

FLOW_REPORTS: tuple[ReportSpec, ...] = ()
