"""What the reports API answers: a report's typed columns and its rows."""

from __future__ import annotations

from typing import Any

from clearing.core.schemas import Model


class ReportColumnOut(Model):
    name: str
    kind: str
    """date, text, points, money (integer minor units of the row's `currency`), count, rate."""


class ReportOut(Model):
    report: str
    columns: list[ReportColumnOut]
    rows: list[dict[str, Any]]
    """One object per row by column name: dates ISO, decimals as strings, the rest as numbers
    or text."""


class ReportListItem(Model):
    name: str
    title: str
    per_program: bool
