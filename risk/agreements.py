"""Controls from agreements between parties: a merchant uses a program's points only under an
agreement in force (within its daily caps); conversion needs both issuers' interchange consent;
a bilateral rate into a program needs its issuer's consent; no rate may create value."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from clearing.core.db import is_postgres
from clearing.core.policy import Action, Decision, OperationContext, Verdict
from clearing.core.timeutil import BusinessCalendar
from issuers import agreements
from issuers.agreements import AgreementInForce
from risk.arbitrage import value_creating_cycle
from risk.models import AgreementUsage

RateGraph = Callable[[Session, OperationContext], Mapping[tuple[str, str], Fraction]]
"""Every conversion rate between programs as it would be after the operation publishes, in
points of the target per point of the source (given by the app: exchange knows the rates)."""

_MERCHANT_ACTIONS = {Action.ACCRUAL, Action.AUTHORISATION, Action.CAPTURE}
_CONVERSIONS = {Action.QUOTE, Action.CONVERSION}


def _decline(
    code: str, reason: str, rule: str, version: int | None = None, **detail: object
) -> Decision:
    return Decision(Verdict.DECLINE, code, rule, version, reason, detail)


@dataclass
class AgreementRule:
    """Merchants act on a program's points only under an agreement its issuer approved."""

    zone: str
    cutoff: str
    name: str = "agreement"

    def __post_init__(self) -> None:
        self._calendar = BusinessCalendar(self.zone, self.cutoff)

    def screen(
        self, session: Session, operations: Sequence[OperationContext]
    ) -> list[Decision | None]:
        """No agreement, or a cap it would pass: declined; the caps' use is counted."""
        merchant_ops = [
            (i, op, (op.merchant_org_id, op.program_id))
            for i, op in enumerate(operations)
            if op.action in _MERCHANT_ACTIONS
            and op.merchant_org_id is not None
            and op.program_id is not None
        ]
        answers: list[Decision | None] = [None] * len(operations)
        if not merchant_ops:
            return answers
        at = min(op.at for _, op, _ in merchant_ops)
        found = agreements.in_force(session, (pair for _, _, pair in merchant_ops), at)
        counted: dict[uuid.UUID, list[tuple[int, str, int]]] = defaultdict(list)
        for i, op, pair in merchant_ops:
            agreement = found.get(pair)
            use = "fund" if op.action == Action.ACCRUAL else "accept"
            if agreement is None or not getattr(agreement, use):
                verb = "fund accruals into" if use == "fund" else "accept the points of"
                answers[i] = _decline(
                    "no_agreement",
                    f"no agreement in force lets this merchant {verb} program {op.program_code}",
                    "agreement",
                )
                continue
            cap = agreement.daily_fund_cap if use == "fund" else agreement.daily_accept_cap
            if cap is not None and op.action != Action.AUTHORISATION:
                counted[agreement.id].append((i, use, op.amount))
            elif cap is not None:
                answers[i] = self._authorisable(session, agreement, op)
        if counted:
            self._count(session, found, counted, operations, answers)
        return answers

    def _authorisable(
        self, session: Session, agreement: AgreementInForce, op: OperationContext
    ) -> Decision | None:
        """An authorisation counts nothing (its capture will) but must still fit today's cap."""
        day = self._calendar.date_of(op.at)
        used = session.execute(
            select(AgreementUsage.accepted).where(
                AgreementUsage.agreement_id == agreement.id, AgreementUsage.business_date == day
            )
        ).scalar()
        assert agreement.daily_accept_cap is not None
        if (used or 0) + op.amount > agreement.daily_accept_cap:
            return _cap_exceeded(agreement, "accept", used or 0, agreement.daily_accept_cap)
        return None

    def _count(
        self,
        session: Session,
        found: Mapping[tuple[uuid.UUID, uuid.UUID], AgreementInForce],
        counted: Mapping[uuid.UUID, list[tuple[int, str, int]]],
        operations: Sequence[OperationContext],
        answers: list[Decision | None],
    ) -> None:
        """Add the operations' amounts to their agreements' rows for the day, locked in
        agreement order, and decline the operations that take a total past its cap."""
        by_id = {a.id: a for a in found.values()}
        for agreement_id in sorted(counted):
            agreement = by_id[agreement_id]
            uses = counted[agreement_id]
            day = self._calendar.date_of(operations[uses[0][0]].at)
            accepted = sum(amount for _, use, amount in uses if use == "accept")
            funded = sum(amount for _, use, amount in uses if use == "fund")
            totals = _add_usage(session, agreement_id, day, accepted, funded)
            for i, use, _ in uses:
                cap = agreement.daily_fund_cap if use == "fund" else agreement.daily_accept_cap
                total = totals[1] if use == "fund" else totals[0]
                if cap is not None and total > cap:
                    answers[i] = _cap_exceeded(agreement, use, total, cap)


def _cap_exceeded(agreement: AgreementInForce, use: str, total: int, cap: int) -> Decision:
    what = "funded accruals" if use == "fund" else "checkouts"
    return _decline(
        "agreement_cap_exceeded",
        f"today's {what} under this agreement would reach {total}, above its daily cap of {cap}",
        f"agreement:{agreement.id}",
        agreement.version,
        cap=str(cap),
    )


def _add_usage(
    session: Session, agreement_id: uuid.UUID, day: date, accepted: int, funded: int
) -> tuple[int, int]:
    """Add to a day's usage row (created if new, locked either way); the totals after."""
    table = cast(Table, AgreementUsage.__table__)
    insert = pg_insert(table) if is_postgres(session) else sqlite_insert(table)
    statement = (
        insert.values(
            agreement_id=agreement_id, business_date=day, accepted=accepted, funded=funded
        )
        .on_conflict_do_update(
            index_elements=["agreement_id", "business_date"],
            set_={
                "accepted": table.c.accepted + accepted,
                "funded": table.c.funded + funded,
            },
        )
        .returning(table.c.accepted, table.c.funded)
    )
    row = session.execute(statement).one()
    return int(row.accepted), int(row.funded)


@dataclass
class InterchangeRule:
    """Conversion between two issuers' programs needs both to consent to interchange; a
    bilateral rate into a program needs its issuer's consent towards the publisher."""

    name: str = "interchange"

    def screen(
        self, session: Session, operations: Sequence[OperationContext]
    ) -> list[Decision | None]:
        """Declines conversions and rates the issuers did not consent to."""
        answers: list[Decision | None] = []
        for op in operations:
            source, target = op.issuer_org_id, op.target_issuer_org_id
            if source is None or target is None or source == target:
                answers.append(None)
            elif op.action in _CONVERSIONS and not (
                agreements.consented(session, source, target)
                and agreements.consented(session, target, source)
            ):
                answers.append(
                    _decline(
                        "no_interchange",
                        f"the issuers of {op.program_code} and {op.target_program_code} have not"
                        " both consented to interchange",
                        "interchange",
                    )
                )
            elif op.action == Action.RATE and not agreements.consented(session, target, source):
                answers.append(
                    _decline(
                        "no_consent",
                        f"the issuer of {op.target_program_code} has not consented to rates"
                        f" from the issuer of {op.program_code}",
                        "interchange",
                    )
                )
            else:
                answers.append(None)
        return answers


@dataclass
class ArbitrageRule:
    """No point value or bilateral rate may let a cycle of conversions return more value than
    it started with (after fees; rounding only ever loses)."""

    rate_graph: RateGraph
    name: str = "arbitrage"

    def screen(
        self, session: Session, operations: Sequence[OperationContext]
    ) -> list[Decision | None]:
        """Declines a rate publication that would close a value-creating cycle."""
        answers: list[Decision | None] = []
        for op in operations:
            if op.action != Action.RATE:
                answers.append(None)
                continue
            cycle = value_creating_cycle(self.rate_graph(session, op))
            if cycle is None:
                answers.append(None)
                continue
            answers.append(
                Decision(
                    Verdict.DECLINE,
                    "arbitrage_cycle",
                    "arbitrage",
                    None,
                    f"this rate would let conversions create value: {cycle.description}",
                    cycle.detail(),
                )
            )
        return answers
