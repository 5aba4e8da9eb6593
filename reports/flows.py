"""Reports on flows between parties: conversions, checkouts, funded accruals, positions, risk.

Days are calendar days in the viewer's zone (`reports.flow_repository`); settlement positions keep
their batches' own business dates. Tenancy: the operator (`org_id` None) sees every party; a
party sees the rows it is a party to: the payer or payee of a conversion or checkout obligation,
the funder or the program's issuer of an accrual, its own positions (of published batches), and
the risk decisions of its own operations (as caller, merchant or issuer). No report here is
operator-only: each narrows to the party's own rows instead of refusing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from reports import flow_repository as repo
from reports.query import (
    Column,
    ColumnKind,
    ReportFunction,
    ReportQuery,
    ReportSpec,
    ReportTable,
)

D, T, P, M, C = (
    ColumnKind.DATE,
    ColumnKind.TEXT,
    ColumnKind.POINTS,
    ColumnKind.MONEY,
    ColumnKind.COUNT,
)

_INTEGERS = frozenset({ColumnKind.POINTS, ColumnKind.MONEY, ColumnKind.COUNT})


def _columns(*pairs: tuple[str, ColumnKind]) -> tuple[Column, ...]:
    return tuple(Column(name, kind) for name, kind in pairs)


def _typed(value: Any, kind: ColumnKind) -> Any:
    """A database value as its column's Python type (PostgreSQL sums bigints as numeric)."""
    if value is None:
        return None
    if kind in _INTEGERS:
        return int(value)
    if kind is ColumnKind.TEXT:
        return str(value)
    return value


def _table(name: str, columns: tuple[Column, ...], rows: Sequence[Any]) -> ReportTable:
    return ReportTable(
        name,
        columns,
        [tuple(_typed(v, c.kind) for v, c in zip(row, columns, strict=True)) for row in rows],
    )


Rows = Callable[[Session, repo.DayClock, uuid.UUID | None, str | None], Sequence[Any]]
"""A query of `flow_repository`: grouped rows in the columns' order."""


def _daily(name: str, columns: tuple[Column, ...], rows: Rows) -> ReportFunction:
    """A report over instants: the query's days in the viewer's zone, grouped in the database."""

    def run(session: Session, query: ReportQuery) -> ReportTable:
        zone = repo.viewer_zone(session, query.org_id)
        clock = repo.day_clock(zone, query.date_from, query.date_to)
        return _table(name, columns, rows(session, clock, query.org_id, query.program_code))

    run.__doc__ = f"The {name} report."
    return run


CONVERSION_COLUMNS = _columns(
    ("business_date", D),
    ("from_program", T),
    ("to_program", T),
    ("currency", T),
    ("points_out", P),
    ("points_in", P),
    ("money", M),  # what the source program's issuer owes the target program's issuer
    ("conversions", C),
)

CHECKOUT_COLUMNS = _columns(
    ("business_date", D),
    ("merchant_id", T),
    ("merchant", T),
    ("program", T),
    ("currency", T),
    ("captures", C),
    ("refunds", C),
    ("captured_points", P),
    ("refunded_points", P),
    ("captured_money", M),
    ("refunded_money", M),
    ("fee", M),  # the merchant's fees to the platform, net of fees given back
    ("net", M),  # captured - refunded - fee: what the merchant keeps
)

ACCRUAL_COLUMNS = _columns(
    ("business_date", D),
    ("program", T),
    ("funder_id", T),
    ("funder", T),
    ("funder_kind", T),  # merchant (merchant-funded) or issuer (the program's own)
    ("currency", T),
    ("points", P),
    ("money", M),  # what a merchant funder owes the issuer; 0 for the issuer's own
    ("accruals", C),
)

POSITION_COLUMNS = _columns(
    ("business_date", D),
    ("currency", T),
    ("party_id", T),
    ("party", T),
    ("party_kind", T),
    ("net", M),  # positive: the party receives; negative: it pays
    ("batches", C),
)

DECISION_COLUMNS = _columns(
    ("business_date", D),
    ("rule", T),  # the rule's id, or the decision's code where no rule gave it
    ("action", T),
    ("allowed", C),
    ("refused", C),
    ("review", C),
    ("decisions", C),
)


def _positions(session: Session, query: ReportQuery) -> ReportTable:
    """Net settlement positions per party and business date (the batches' own dates)."""
    rows = repo.position_rows(session, query.date_from, query.date_to, query.org_id)
    return _table("settlement_positions", POSITION_COLUMNS, rows)


FLOW_REPORTS: tuple[ReportSpec, ...] = (
    ReportSpec(
        "conversion_matrix",
        "Conversions between programs per day: points out and in, money owed",
        _daily("conversion_matrix", CONVERSION_COLUMNS, repo.conversion_rows),
        per_program=True,
    ),
    ReportSpec(
        "checkout_volume",
        "Checkouts per merchant and program per day: captured, refunded, fee and net",
        _daily("checkout_volume", CHECKOUT_COLUMNS, repo.checkout_rows),
        per_program=True,
    ),
    ReportSpec(
        "funded_accruals",
        "Accruals per funder (merchant-funded or the issuer's own) per program per day",
        _daily("funded_accruals", ACCRUAL_COLUMNS, repo.accrual_rows),
        per_program=True,
    ),
    ReportSpec(
        "settlement_positions",
        "Net settlement positions per party and business date",
        _positions,
    ),
    ReportSpec(
        "risk_decisions",
        "Risk decisions per rule and day: allowed, refused, held for review",
        _daily("risk_decisions", DECISION_COLUMNS, repo.decision_rows),
        per_program=True,
    ),
)
