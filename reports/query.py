"""What every report is asked for and what it answers: a query in, a table of typed columns out."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from clearing.core.errors import InvalidInput

MAX_RANGE_DAYS = 3660
"""Ten years of business dates: the widest range one report covers."""


class ColumnKind(StrEnum):
    """How a column's values are typed, formatted and exported."""

    DATE = "date"  # a business date (datetime.date) in the party's zone
    TEXT = "text"
    POINTS = "points"  # int
    MONEY = "money"  # int minor units; the row's `currency` column says of what
    COUNT = "count"  # int
    RATE = "rate"  # Decimal (a share or a point value), never float


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a report: its name (snake_case, stable: exports and the API use it)."""

    name: str
    kind: ColumnKind


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """The figures asked for: business dates [date_from, date_to], seen by one party or all.

    ``org_id`` None is the operator's view (every party); otherwise only that party's figures.
    ``program_code`` narrows to one program where the report is per program.
    """

    date_from: date
    date_to: date
    org_id: uuid.UUID | None
    program_code: str | None = None

    def __post_init__(self) -> None:
        if self.date_to < self.date_from:
            raise InvalidInput("date_to is before date_from", field="date_to")
        if (self.date_to - self.date_from).days >= MAX_RANGE_DAYS:
            raise InvalidInput(f"a report covers at most {MAX_RANGE_DAYS} days", field="date_to")


@dataclass(slots=True)
class ReportTable:
    """A report's answer: typed columns and their rows, in the order they are shown."""

    report: str
    columns: tuple[Column, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts by column name (the API's JSON shape)."""
        names = [c.name for c in self.columns]
        return [dict(zip(names, row, strict=True)) for row in self.rows]


ReportFunction = Callable[[Session, ReportQuery], ReportTable]


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """A report the API, the CLI, the exports and the console can name."""

    name: str
    title: str
    run: ReportFunction
    per_program: bool = False
    """True where `ReportQuery.program_code` narrows it."""
