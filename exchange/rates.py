"""The conversion rate graph: what a point of each program converts into, per other program."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from itertools import permutations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clearing.core.policy import OperationContext
from exchange.models import BilateralRate
from issuers.models import Organisation, PointValue, Program
from issuers.organisations import platform


def rate_graph(session: Session, operation: OperationContext) -> dict[tuple[str, str], Fraction]:
    """Every rate between two programs of one currency once every published version is in
    force, with the operation's proposed point value or bilateral rate in place: a bilateral
    rate (target block / source block) where one exists, else value-based conversion
    (source value x (1 - platform fee) / target value).

    Edges are drawn whatever the issuers' interchange consent today, since consent can be
    given later without a rate being checked again.
    """
    programs = session.execute(
        select(Program.id, Program.code, Organisation.currency)
        .join(Organisation, Organisation.id == Program.issuer_id)
        .where(Program.status == "active")
    ).all()
    latest_value = (
        select(PointValue.program_id, func.max(PointValue.version).label("version"))
        .group_by(PointValue.program_id)
        .subquery()
    )
    values: dict[str, Fraction] = {}
    code_of = {row.id: row.code for row in programs}
    for program_id, value in session.execute(
        select(PointValue.program_id, PointValue.value).join(
            latest_value,
            (latest_value.c.program_id == PointValue.program_id)
            & (latest_value.c.version == PointValue.version),
        )
    ):
        if program_id in code_of:
            values[code_of[program_id]] = Fraction(value)
    if operation.point_value is not None and operation.program_code is not None:
        values[operation.program_code] = Fraction(operation.point_value)
    latest_rate = (
        select(
            BilateralRate.source_program_id,
            BilateralRate.target_program_id,
            func.max(BilateralRate.version).label("version"),
        )
        .group_by(BilateralRate.source_program_id, BilateralRate.target_program_id)
        .subquery()
    )
    blocks: dict[tuple[str, str], Fraction] = {}
    for rate in session.execute(
        select(BilateralRate).join(
            latest_rate,
            (latest_rate.c.source_program_id == BilateralRate.source_program_id)
            & (latest_rate.c.target_program_id == BilateralRate.target_program_id)
            & (latest_rate.c.version == BilateralRate.version),
        )
    ).scalars():
        pair = (code_of.get(rate.source_program_id), code_of.get(rate.target_program_id))
        if pair[0] is not None and pair[1] is not None:
            blocks[(pair[0], pair[1])] = Fraction(rate.target_block, rate.source_block)
    if operation.block_rate is not None and operation.target_program_code is not None:
        assert operation.program_code is not None
        source_block, target_block = operation.block_rate
        blocks[(operation.program_code, operation.target_program_code)] = Fraction(
            target_block, source_block
        )
    keep = 1 - Fraction(platform(session).conversion_fee_rate or Decimal(0))
    currency = {row.code: row.currency for row in programs}
    graph: dict[tuple[str, str], Fraction] = {}
    for source, target in permutations(sorted(values), 2):
        if currency[source] != currency[target]:
            continue
        graph[(source, target)] = blocks.get(
            (source, target), values[source] * keep / values[target]
        )
    return graph
