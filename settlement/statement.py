"""Statement content shared by every file layout: detail rows, summary and control totals."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from clearing.core.errors import ClearingError, Kind
from clearing.core.kinds import OrgKind
from clearing.core.money import exponent
from settlement.lines import (
    FEE_EVENT_TYPES,
    LINE_COLUMNS,
    ObligationLine,
    Party,
    booked_micros,
    ensure_frame,
)
from settlement.sums import INT64_MAX, exact_group_sums


class StatementInputError(ClearingError):
    """Lines or nets the batch itself produced do not make a statement: a fault of ours."""

    kind = Kind.OUR_FAULT
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
    batches: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """(counterparty, event_type) -> [detail count, gross, fee, net]: camt.053 batch entries."""

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
        batch = self.batches.setdefault((row.counterparty, row.event_type), [0, 0, 0, 0])
        batch[0] += 1
        batch[1] += row.gross
        batch[2] += row.fee
        batch[3] += net

    def add_frame(self, details: pd.DataFrame) -> None:
        """Count a detail frame (DETAIL_COLUMNS) into the totals, exactly."""
        one = DetailBlock(details, np.array([len(details)], np.int64), np.zeros(1, np.int64))
        add_block_totals([self], one)

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
    as_platform = party.kind == OrgKind.PLATFORM
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


# ---------------------------------------------------------------------------------------------
# Vectorised detail rows: many statements at once, chunk by chunk.

DETAIL_COLUMNS = (
    "line_no",
    "reference",
    "original_reference",
    "event_type",
    "counterparty",
    "program",
    "points",
    "point_value",
    "point_value_version",
    "gross",
    "fee",
    "booked_at",
)
"""Columns of a detail frame; text columns hold "" for none, booked_at int64 microseconds UTC."""
_INT64_LIMIT = 2**62
_SLICE = 1 << 20


def _first_occurrence(codes: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    # Codes of pd.factorize appear in increasing order: a code is new where it exceeds every
    # earlier one. The result is indexed by code.
    if len(codes) == 0:
        return np.zeros(0, dtype=np.intp)
    before = np.empty_like(codes)
    before[0] = -1
    np.maximum.accumulate(codes[:-1], out=before[1:])
    return np.flatnonzero(codes > before)


def _codes(values: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64], int]:
    codes, uniques = pd.factorize(values)
    return codes.astype(np.int64, copy=False), max(len(uniques), 1)


def _group_sum(values: npt.NDArray[np.int64], groups: npt.NDArray[np.int64], size: int) -> Any:
    out = np.zeros(size, dtype=np.int64)
    if len(values):
        sums = pd.Series(values).groupby(groups, sort=True).sum()
        out[sums.index.to_numpy()] = sums.to_numpy()
    return out


def _lookup(keys: npt.NDArray[np.int64], table: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Index of the first occurrence in `table` of each of `keys`, or -1."""
    uniq, first = np.unique(table, return_index=True)
    if len(uniq) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(uniq, keys), len(uniq) - 1)
    return np.where(uniq[at] == keys, first[at], -1).astype(np.int64)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    if moment.tzinfo is None:
        raise StatementInputError(f"naive datetime {moment.isoformat()} (need timezone-aware)")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _moment(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@dataclass(frozen=True)
class DetailBlock:
    """Every party's detail rows of a stretch of lines, in one frame (DETAIL_COLUMNS) ordered
    by party: party i's rows are `counts[i]` rows from row `firsts[i]`."""

    details: pd.DataFrame
    counts: npt.NDArray[np.int64]
    firsts: npt.NDArray[np.int64]

    def owners(self) -> list[int]:
        """The parties with rows here, in order."""
        return [int(i) for i in np.flatnonzero(self.counts)]

    def pieces(self) -> Iterator[tuple[int, pd.DataFrame]]:
        """(party index, its rows) of every party with rows here."""
        for owner in self.owners():
            lo = int(self.firsts[owner])
            yield owner, self.details.iloc[lo : lo + int(self.counts[owner])]


def add_block_totals(totals: Sequence[StatementTotals], block: DetailBlock) -> None:
    """Count a block into its parties' totals (`totals[i]`: party i's), exactly, with one
    group-by for all of them: as `add_frame` of each party's rows, without a frame per party."""
    details = block.details
    n = len(details)
    if n == 0:
        return
    gross = details["gross"].to_numpy()
    fee = details["fee"].to_numpy()
    points = details["points"].to_numpy()
    vector = gross.dtype == np.int64 and fee.dtype == np.int64 and points.dtype == np.int64
    if (
        not vector
        or max(abs(int(gross.min())), abs(int(gross.max())))
        + max(abs(int(fee.min())), abs(int(fee.max())))
        > INT64_MAX
    ):
        # net = gross + fee below is int64: a block where it could wrap is counted row by row.
        for owner, piece in block.pieces():
            for row in detail_rows_of_frame(piece):
                totals[owner].add(row)
        return
    net = gross + fee
    credit = net >= 0
    zero = np.zeros(n, dtype=np.int64)
    parts = pd.DataFrame(
        {
            "owner": np.repeat(np.arange(len(block.counts)), block.counts),
            "counterparty": details["counterparty"].to_numpy(),
            "event_type": details["event_type"].to_numpy(),
            "payable": np.where(gross < 0, -gross, 0),
            "receivable": np.where(gross > 0, gross, 0),
            "gross": gross,
            "fee": fee,
            "net": net,
            "credits": np.where(credit, net, zero),
            "debits": np.where(credit, zero, net),
            "credit_count": credit.astype(np.int64),
            "points": points,
        },
        copy=False,
    )
    columns = ["payable", "receivable", "gross", "fee", "net", "credits", "debits"]
    keys, sums, counts = exact_group_sums(
        parts, ["owner", "counterparty", "event_type"], [*columns, "credit_count", "points"]
    )
    for at, ((owner, cp, ev), c) in enumerate(zip(keys, counts, strict=True)):
        payable, receivable, g, f, nt, credits, debits = (sums[k][at] for k in columns)
        target = totals[int(owner)]
        target.count += c
        target.credit_count += sums["credit_count"][at]
        target.credits += credits
        target.debits -= debits
        target.points += sums["points"][at]
        entry = target.summary.get(cp)
        if entry is None:
            entry = target.summary[cp] = CounterpartySummary()
        entry.gross_payable += payable
        entry.gross_receivable += receivable
        entry.fees += f
        entry.net += nt
        entry.count += c
        batch = target.batches.setdefault((cp, ev), [0, 0, 0, 0])
        batch[0] += c
        batch[1] += g
        batch[2] += f
        batch[3] += nt


class DetailFrames:
    """Detail rows of the statements of `parties`, from chunks of lines in one streaming pass.

    Chunks are lists of ObligationLine or frames with LINE_COLUMNS (see lines.normalize_frame),
    strictly sorted by (booked_at, reference, seq) across chunks, all in the statement's
    currency and inside its window. `feed` yields `(party index, detail frame)` pieces with
    DETAIL_COLUMNS; a party's pieces, concatenated, are exactly the rows `iter_detail_rows`
    gives for it. A reference's lines may straddle chunks: the last reference of a chunk is
    held back until the next one shows it is complete.
    """

    def __init__(self, parties: Sequence[Party], meta: StatementMeta) -> None:
        exponent(meta.currency)
        ids = [p.id for p in parties]
        if len(set(ids)) != len(ids):
            raise ValueError("parties must be distinct")
        self.parties = tuple(parties)
        self._currency = meta.currency
        self._start = micros(meta.window_start)
        self._end = micros(meta.window_end)
        self._party_view = {p.id: i for i, p in enumerate(parties) if p.kind != OrgKind.PLATFORM}
        self._platform_view = [
            (i, p.id) for i, p in enumerate(parties) if p.kind == OrgKind.PLATFORM
        ]
        self._line_nos = np.zeros(len(parties), dtype=np.int64)
        self._carry: pd.DataFrame | None = None
        self._last: tuple[int, str, int] | None = None

    def feed(
        self, chunk: Sequence[ObligationLine] | pd.DataFrame
    ) -> Iterator[tuple[int, pd.DataFrame]]:
        """Validate one chunk and yield the detail rows of every reference it completes."""
        for block in self.feed_blocks(chunk):
            yield from block.pieces()

    def close(self) -> Iterator[tuple[int, pd.DataFrame]]:
        """Yield the rows of the last reference."""
        for block in self.close_blocks():
            yield from block.pieces()

    def feed_blocks(self, chunk: Sequence[ObligationLine] | pd.DataFrame) -> Iterator[DetailBlock]:
        """As `feed`, every party's rows of a stretch of the chunk in one frame (DetailBlock)."""
        frame = ensure_frame(chunk)
        if len(frame) == 0:
            return
        self._validate(frame)
        if self._carry is not None:
            frame = pd.concat([self._carry, frame], ignore_index=True)
        ref = frame["reference"].to_numpy()
        changes = np.flatnonzero(ref[1:] != ref[:-1])
        cut = int(changes[-1]) + 1 if len(changes) else 0
        self._carry = frame.iloc[cut:].reset_index(drop=True)
        if cut:
            yield from self._details(frame.iloc[:cut].reset_index(drop=True))

    def close_blocks(self) -> Iterator[DetailBlock]:
        """As `close`, in one DetailBlock."""
        carry, self._carry = self._carry, None
        if carry is not None and len(carry):
            yield from self._details(carry)

    def _validate(self, frame: pd.DataFrame) -> None:
        ref = frame["reference"].to_numpy()
        seq = frame["seq"].to_numpy()
        booked = booked_micros(frame)
        if self._last is not None:
            b = np.concatenate([[self._last[0]], booked])
            r = np.concatenate([np.array([self._last[1]], dtype=object), ref])
            s = np.concatenate([[self._last[2]], seq])
        else:
            b, r, s = booked, ref, seq
        later = b[1:] > b[:-1]
        same = b[1:] == b[:-1]
        if not later.all():
            r_gt = r[1:] > r[:-1]
            r_eq = r[1:] == r[:-1]
            ok = later | (same & (r_gt | (r_eq & (s[1:] > s[:-1]))))
            bad = np.flatnonzero(~ok)
            if len(bad):
                i = int(bad[0])
                raise StatementInputError(
                    f"lines must be strictly sorted by (booked_at, reference, seq): "
                    f"{r[i + 1]}/{s[i + 1]} comes after {r[i]}/{s[i]}"
                )
        self._last = (int(booked[-1]), str(ref[-1]), int(seq[-1]))
        cur = frame["currency"].to_numpy()
        wrong = np.flatnonzero(cur != self._currency)
        if len(wrong):
            i = int(wrong[0])
            raise StatementInputError(
                f"line {ref[i]}/{seq[i]} is in {cur[i]}, statement is in {self._currency}"
            )
        outside = np.flatnonzero((booked < self._start) | (booked >= self._end))
        if len(outside):
            i = int(outside[0])
            raise StatementInputError(
                f"line {ref[i]}/{seq[i]} booked at {_moment(int(booked[i])).isoformat()} "
                "is outside the batch window"
            )
        amount = frame["amount"].to_numpy()
        small = np.flatnonzero(amount <= 0)
        if len(small):
            i = int(small[0])
            raise StatementInputError(f"line {ref[i]}/{seq[i]} amount is not positive")

    def _details(self, frame: pd.DataFrame) -> Iterator[DetailBlock]:
        n = len(frame)
        ref = frame["reference"].to_numpy()
        starts = np.flatnonzero(np.concatenate([[True], ref[1:] != ref[:-1]]))
        if n > _SLICE and len(starts) > 1:
            # Bounded key arithmetic below: split at a reference boundary near the middle.
            mid = int(starts[min(max(int(np.searchsorted(starts, n // 2)), 1), len(starts) - 1)])
            yield from self._details(frame.iloc[:mid].reset_index(drop=True))
            yield from self._details(frame.iloc[mid:].reset_index(drop=True))
            return
        run_len = int(np.diff(np.append(starts, n)).max())
        amount = frame["amount"].to_numpy()
        points = frame["points"].to_numpy()
        bound = max(int(np.abs(amount).max()), int(np.abs(points).max()))
        if bound * run_len >= _INT64_LIMIT or len(self.parties) * 2 * n * n >= _INT64_LIMIT:
            details = self._python_details(frame)
        else:
            details = self._vector_details(frame, starts)
        owners = details.pop("owner").to_numpy()
        counts = np.bincount(owners, minlength=len(self.parties))
        firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        details["line_no"] = (
            self._line_nos[owners] + np.arange(len(owners)) - firsts[owners] + 1
        ).astype(np.int64)
        self._line_nos += counts
        yield DetailBlock(details[list(DETAIL_COLUMNS)], counts, firsts)

    def _vector_details(self, frame: pd.DataFrame, starts: npt.NDArray[np.intp]) -> pd.DataFrame:
        """Every party's detail rows of a chunk, from whole-column array operations.

        Long on purpose: a dozen aligned arrays (runs, parties, legs, fees) are built and indexed
        together; split, each piece would take and return most of them, and the byte-identity
        test against the row-by-row reference (`iter_detail_rows`) covers it as one unit.
        """
        n = len(frame)
        run = np.zeros(n, dtype=np.int64)
        run[starts[1:]] = 1
        np.cumsum(run, out=run)
        nruns = len(starts)
        amount = frame["amount"].to_numpy()
        party_codes, party_names = pd.factorize(
            np.concatenate([frame["payer"].to_numpy(), frame["payee"].to_numpy()])
        )
        party_codes = party_codes.astype(np.int64, copy=False)
        payer_c, payee_c = party_codes[:n], party_codes[n:]
        nparty = max(len(party_names), 1)
        view = np.array([self._party_view.get(str(p), -1) for p in party_names], dtype=np.int64)
        idx = np.arange(n, dtype=np.int64)
        owner_l: list[Any] = []
        line_l: list[Any] = []
        side_l: list[Any] = []
        cp_l: list[Any] = []
        amt_l: list[Any] = []

        def legs(owner: Any, mask: Any, side: int, cp: Any, sign: int) -> None:
            owner_l.append(owner if np.ndim(owner) else np.full(int(mask.sum()), owner))
            line_l.append(idx[mask])
            side_l.append(np.full(int(mask.sum()), side, dtype=np.int64))
            cp_l.append(cp[mask])
            amt_l.append(amount[mask] if sign > 0 else -amount[mask])

        if len(view):
            po = view[payer_c]
            qo = view[payee_c]
            m1 = po >= 0
            m2 = (qo >= 0) & (payer_c != payee_c)
            legs(po[m1], m1, 0, payee_c, -1)
            legs(qo[m2], m2, 1, payer_c, +1)
        names = {str(p): i for i, p in enumerate(party_names)}
        for owner, pid in self._platform_view:
            code = names.get(pid, -1)
            legs(owner, payer_c != code, 0, payer_c, +1)
            legs(owner, payee_c != code, 1, payee_c, -1)
        leg_owner = np.concatenate(owner_l).astype(np.int64)
        leg_line = np.concatenate(line_l)
        order = np.argsort(leg_owner * (2 * n) + 2 * leg_line + np.concatenate(side_l))
        leg_owner, leg_line = leg_owner[order], leg_line[order]
        leg_cp = np.concatenate(cp_l)[order]
        leg_amt = np.concatenate(amt_l)[order]

        ev_c, nev = _codes(frame["event_type"].to_numpy())
        ev_names = pd.unique(frame["event_type"].to_numpy())
        fee_ev = np.array([e in FEE_EVENT_TYPES for e in ev_names] or [False])
        prog_c, _ = _codes(frame["program"].to_numpy())
        pv_c, npv = _codes(frame["point_value"].to_numpy())
        pvv_c, npvv = _codes(frame["point_value_version"].to_numpy())
        attr, nattr = _codes((prog_c * npv + pv_c) * npvv + pvv_c)

        leg_run = run[leg_line]
        k_run = leg_owner * nruns + leg_run
        k_cp = (leg_owner * nparty + leg_cp) * nruns + leg_run
        is_fee = fee_ev[ev_c[leg_line]]
        mi = np.flatnonzero(~is_fee)
        cp_group, _ = _codes(k_cp[mi])
        gid, ngroups = _codes(
            cp_group * (nev * nattr) + ev_c[leg_line[mi]] * nattr + attr[leg_line[mi]]
        )
        if len(mi) == 0:
            ngroups = 0
        row_leg = mi[_first_occurrence(gid)]
        gross = _group_sum(leg_amt[mi], gid, ngroups)
        pts = _group_sum(frame["points"].to_numpy()[leg_line[mi]], gid, ngroups)

        fi = np.flatnonzero(is_fee)
        target = _lookup(k_cp[fi], k_cp[row_leg])
        miss = target < 0
        target[miss] = _lookup(k_run[fi[miss]], k_run[row_leg])
        hit = target >= 0
        fees = _group_sum(leg_amt[fi[hit]], target[hit], ngroups)
        lone = fi[~hit]
        lone_group, _ = _codes(k_cp[lone])
        fid, nlone = _codes(lone_group * nev + ev_c[leg_line[lone]])
        if len(lone) == 0:
            nlone = 0
        lone_leg = lone[_first_occurrence(fid)]
        lone_fee = _group_sum(leg_amt[lone], fid, nlone)

        rows_leg = np.concatenate([row_leg, lone_leg])
        order = np.argsort(rows_leg, kind="stable")
        rows_leg = rows_leg[order]
        is_main = np.concatenate([np.ones(len(row_leg), bool), np.zeros(len(lone_leg), bool)])
        is_main = is_main[order]
        line = leg_line[rows_leg]
        empty = np.array([""], dtype=object)

        def main_only(column: str) -> Any:
            values = frame[column].to_numpy()[line]
            return np.where(is_main, values, empty[0]) if not is_main.all() else values

        zeros = np.zeros(len(lone_leg), dtype=np.int64)
        return pd.DataFrame(
            {
                "owner": leg_owner[rows_leg],
                "reference": ref_of(frame)[line],
                "original_reference": frame["original_reference"].to_numpy()[line],
                "event_type": frame["event_type"].to_numpy()[line],
                "counterparty": np.asarray(party_names, dtype=object)[leg_cp[rows_leg]],
                "program": main_only("program"),
                "points": np.concatenate([pts, zeros])[order],
                "point_value": main_only("point_value"),
                "point_value_version": main_only("point_value_version"),
                "gross": np.concatenate([gross, zeros])[order],
                "fee": np.concatenate([fees, lone_fee])[order],
                "booked_at": booked_micros(frame)[line],
            }
        )

    def _python_details(self, frame: pd.DataFrame) -> pd.DataFrame:
        # Amounts so large that int64 sums could overflow: the exact row-by-row rules, with
        # Python ints in object columns.
        lines = list(frame_lines(frame))
        records: list[tuple[Any, ...]] = []
        for owner, party in enumerate(self.parties):
            as_platform = party.kind == OrgKind.PLATFORM
            run: list[_Leg] = []
            run_reference: str | None = None
            for ln in [*lines, None]:
                if ln is None or ln.reference != run_reference:
                    for row in _rows_of_reference(run) if run else ():
                        records.append(
                            (
                                owner,
                                row.reference,
                                row.original_reference or "",
                                row.event_type,
                                row.counterparty,
                                row.program or "",
                                row.points,
                                decimal_text(row.point_value),
                                ""
                                if row.point_value_version is None
                                else str(row.point_value_version),
                                row.gross,
                                row.fee,
                                micros(row.booked_at),
                            )
                        )
                    run = []
                    if ln is None:
                        break
                    run_reference = ln.reference
                run.extend(_legs(ln, party.id, as_platform))
        columns = ["owner", *DETAIL_COLUMNS[1:]]
        out = (
            pd.DataFrame.from_records(records, columns=columns)
            if records
            else pd.DataFrame(
                {
                    c: np.zeros(0, dtype=np.int64 if c in ("owner", "booked_at") else object)
                    for c in columns
                }
            )
        )
        for name in ("points", "gross", "fee"):
            out[name] = out[name].astype(object)
        out["owner"] = out["owner"].astype(np.int64)
        out["booked_at"] = out["booked_at"].astype(np.int64)
        return out


def ref_of(frame: pd.DataFrame) -> Any:
    """The reference column of a canonical frame."""
    return frame["reference"].to_numpy()


def frame_lines(frame: pd.DataFrame) -> Iterator[ObligationLine]:
    """The lines of a canonical frame as ObligationLine objects (slow; for edge cases)."""
    columns: list[list[Any]] = [frame[c].tolist() for c in LINE_COLUMNS[:-1]]
    columns.append(booked_micros(frame).tolist())
    for ref, seq, orig, ev, payer, payee, cur, amount, prog, pts, pv, pvv, at in zip(
        *columns, strict=True
    ):
        yield ObligationLine(
            reference=str(ref),
            seq=int(seq),
            original_reference=str(orig) or None,
            event_type=str(ev),
            payer=str(payer),
            payee=str(payee),
            currency=str(cur),
            amount=int(amount),
            program=str(prog) or None,
            points=int(pts),
            point_value=Decimal(str(pv)) if pv else None,
            point_value_version=int(pvv) if pvv else None,
            booked_at=_moment(int(at)),
        )


def detail_rows_of_frame(details: pd.DataFrame) -> Iterator[DetailRow]:
    """DetailRow objects of a detail frame (for writers that work row by row)."""
    columns: list[list[Any]] = [details[c].tolist() for c in DETAIL_COLUMNS]
    for no, ref, orig, ev, cp, prog, pts, pv, pvv, gross, fee, at in zip(*columns, strict=True):
        yield DetailRow(
            int(no),
            str(ref),
            str(orig) or None,
            str(ev),
            str(cp),
            str(prog) or None,
            int(pts),
            Decimal(str(pv)) if pv else None,
            int(pvv) if pvv else None,
            int(gross),
            int(fee),
            _moment(int(at)),
        )
