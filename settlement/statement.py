"""Statement content shared by every file layout: detail rows, summary and control totals."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from clearing.errors import InvalidInput
from settlement.currencies import exponent
from settlement.lines import FEE_EVENT_TYPES, ObligationLine, Party


class StatementInputError(InvalidInput):
    code = "statement_input"
    title = "Lines cannot be written as a statement"


@dataclass(frozen=True, slots=True)
class StatementMeta:
    """What a statement's header says; nothing in a file comes from the clock, only from here."""

    batch_id: str
    settlement_date: date
    window_start: datetime
    """Inclusive, timezone-aware (shown in `zone`)."""
    window_end: datetime
    """Exclusive."""
    zone: str
    """IANA zone name of the business day, e.g. "Asia/Shanghai"."""
    currency: str
    generated_at: datetime
    sequence: int
    """1, 2, 3... per (party, currency): a gap means a missed statement."""
    previous_file_id: str | None


def statement_file_id(meta: StatementMeta, party_id: str) -> str:
    """Deterministic id of the statement of `party_id` described by `meta`."""
    return f"ST-{meta.currency}-{meta.settlement_date:%Y%m%d}-{party_id}-{meta.sequence:06d}"


def utc_text(moment: datetime) -> str:
    """ISO 8601 text of an aware datetime in UTC, always with microseconds and a Z."""
    if moment.tzinfo is None:
        raise StatementInputError(f"naive datetime {moment.isoformat()} (need timezone-aware)")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decimal_text(value: Decimal | None) -> str:
    """Plain (never scientific) text of a Decimal; empty for None."""
    return "" if value is None else format(value, "f")


@dataclass(slots=True)
class DetailRow:
    """One detail line of a statement, amounts signed from the owner's view (+ owed to it)."""

    line_no: int
    reference: str
    original_reference: str | None
    event_type: str
    counterparty: str
    program: str | None
    points: int
    point_value: Decimal | None
    point_value_version: int | None
    gross: int
    fee: int
    booked_at: datetime

    @property
    def net(self) -> int:
        """Gross plus fee: what this line adds to the owner's net position."""
        return self.gross + self.fee

    @property
    def dc(self) -> str:
        """ "C" when the platform owes the owner (net >= 0), "D" when the owner owes."""
        return "C" if self.gross + self.fee >= 0 else "D"


@dataclass(slots=True)
class CounterpartySummary:
    """Per counterparty: gross payable and receivable (both >= 0), signed fees and net."""

    gross_payable: int = 0
    gross_receivable: int = 0
    fees: int = 0
    net: int = 0
    count: int = 0


@dataclass(slots=True)
class StatementTotals:
    """Control totals accumulated while detail rows stream past."""

    count: int = 0
    credit_count: int = 0
    debits: int = 0
    credits: int = 0
    points: int = 0
    summary: dict[str, CounterpartySummary] = field(default_factory=dict)

    @property
    def net(self) -> int:
        """Credits less debits: the owner's net position."""
        return self.credits - self.debits

    def add(self, row: DetailRow) -> None:
        """Count `row` into the totals and its counterparty's summary."""
        net = row.gross + row.fee
        self.count += 1
        if net >= 0:
            self.credits += net
            self.credit_count += 1
        else:
            self.debits -= net
        self.points += row.points
        entry = self.summary.get(row.counterparty)
        if entry is None:
            entry = self.summary[row.counterparty] = CounterpartySummary()
        if row.gross < 0:
            entry.gross_payable -= row.gross
        else:
            entry.gross_receivable += row.gross
        entry.fees += row.fee
        entry.net += net
        entry.count += 1

    def sorted_summary(self) -> list[tuple[str, CounterpartySummary]]:
        """Summary records in counterparty order."""
        return sorted(self.summary.items())


@dataclass(slots=True)
class _Leg:
    counterparty: str
    amount: int
    line: ObligationLine


def _legs(line: ObligationLine, owner: str, as_platform: bool) -> Iterator[_Leg]:
    if not as_platform:
        if line.payer == owner:
            yield _Leg(line.payee, -line.amount, line)
        elif line.payee == owner:
            yield _Leg(line.payer, line.amount, line)
        return
    # As central counterparty the platform receives every obligation from its payer and owes it
    # to its payee; a side that is the platform itself (its fees) has no opposite leg.
    if line.payer != owner:
        yield _Leg(line.payer, line.amount, line)
    if line.payee != owner:
        yield _Leg(line.payee, -line.amount, line)


def _rows_of_reference(legs: list[_Leg]) -> list[DetailRow]:
    main: dict[tuple[object, ...], DetailRow] = {}
    fees: list[_Leg] = []
    for leg in legs:
        ln = leg.line
        if ln.event_type in FEE_EVENT_TYPES:
            fees.append(leg)
            continue
        key = (leg.counterparty, ln.event_type, ln.program, ln.point_value, ln.point_value_version)
        row = main.get(key)
        if row is None:
            main[key] = DetailRow(
                0,
                ln.reference,
                ln.original_reference,
                ln.event_type,
                leg.counterparty,
                ln.program,
                ln.points or 0,
                ln.point_value,
                ln.point_value_version,
                leg.amount,
                0,
                ln.booked_at,
            )
        else:
            row.gross += leg.amount
            row.points += ln.points or 0
    rows = list(main.values())
    fee_only: dict[tuple[str, str], DetailRow] = {}
    for leg in fees:
        # A fee joins the row of the same counterparty (the platform's view), else the
        # reference's first row (a party's view: its fee is owed to the platform, not to the
        # transaction's counterparty); a fee with no transaction in this file stands alone.
        target = next((r for r in rows if r.counterparty == leg.counterparty), None)
        if target is None and rows:
            target = rows[0]
        if target is None:
            ln = leg.line
            target = fee_only.get((leg.counterparty, ln.event_type))
            if target is None:
                target = fee_only[(leg.counterparty, ln.event_type)] = DetailRow(
                    0,
                    ln.reference,
                    ln.original_reference,
                    ln.event_type,
                    leg.counterparty,
                    None,
                    0,
                    None,
                    None,
                    0,
                    0,
                    ln.booked_at,
                )
        target.fee += leg.amount
    rows.extend(fee_only.values())
    return rows


def iter_detail_rows(
    lines: Iterable[ObligationLine], party: Party, meta: StatementMeta
) -> Iterator[DetailRow]:
    """Detail rows of `party`'s statement, streaming over lines sorted by (booked_at, ref, seq)."""
    exponent(meta.currency)
    owner = party.id
    as_platform = party.kind == "platform"
    previous: tuple[datetime, str, int] | None = None
    run: list[_Leg] = []
    run_reference: str | None = None
    line_no = 0
    for line in lines:
        order = (line.booked_at, line.reference, line.seq)
        if previous is not None and order <= previous:
            raise StatementInputError(
                f"lines must be strictly sorted by (booked_at, reference, seq): "
                f"{line.reference}/{line.seq} comes after {previous[1]}/{previous[2]}"
            )
        previous = order
        if line.currency != meta.currency:
            raise StatementInputError(
                f"line {line.reference}/{line.seq} is in {line.currency}, "
                f"statement is in {meta.currency}"
            )
        if not meta.window_start <= line.booked_at < meta.window_end:
            raise StatementInputError(
                f"line {line.reference}/{line.seq} booked at {line.booked_at.isoformat()} "
                "is outside the batch window"
            )
        if line.amount <= 0:
            raise StatementInputError(f"line {line.reference}/{line.seq} amount is not positive")
        if line.reference != run_reference:
            if run:
                for row in _rows_of_reference(run):
                    line_no += 1
                    row.line_no = line_no
                    yield row
                run = []
            run_reference = line.reference
        run.extend(_legs(line, owner, as_platform))
    if run:
        for row in _rows_of_reference(run):
            line_no += 1
            row.line_no = line_no
            yield row
