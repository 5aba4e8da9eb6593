"""Reports on the points themselves: liability roll-forward, breakage, redemption, ageing."""

from __future__ import annotations

from reports.query import ReportSpec

LEDGER_REPORTS: tuple[ReportSpec, ...] = ()
