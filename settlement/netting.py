"""Clearing and multilateral netting of one batch's obligation lines, chunk by chunk."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
import pandas as pd

from clearing.core.kinds import ObligationEvent
from clearing.core.money import is_known_currency
from settlement.lines import EVENT_TYPES, ObligationLine, ensure_frame, lines_to_frame
from settlement.sums import exact_group_sums

__all__ = [
    "Clearer",
    "Clearing",
    "Gross",
    "Totals",
    "check_invariants",
    "clear",
    "clearing_of",
    "lines_to_frame",
]

GrossKey = tuple[str, str, str, str]
"""(currency, payer, payee, event_type)."""

EXAMPLES = 5
"""Examples ("reference/seq") an anomaly or duplicate report names, the first in line order."""

# The anomalies a clearing reports, named by the words of its report: every engine checks each.
AMOUNT_NOT_POSITIVE = "amount is not positive"
UNKNOWN_EVENT = "event type is not one of EVENT_TYPES"
SAME_PARTY = "payer and payee are the same party"
NEGATIVE_POINTS = "points are negative"


@dataclass(frozen=True, slots=True)
class Gross:
    """Gross obligations of one (currency, payer, payee, event_type)."""

    amount: int
    """Minor units of the currency."""
    count: int
    points: int
    """Whole points behind the obligations (lines without points count 0)."""


@dataclass(frozen=True, slots=True)
class Totals:
    """Control totals of a set of lines in one currency."""

    amount: int
    count: int
    points: int


@dataclass(frozen=True)
class Clearing:
    """Gross obligations, net positions and the control figures needed to check them."""

    gross: Mapping[GrossKey, Gross]
    positions: Mapping[tuple[str, str], int]
    """(currency, party) -> received - paid, in minor units; > 0: the platform pays the party."""
    fee_income: Mapping[str, int]
    """Currency -> fees less fee refunds: the platform's own income."""
    input_totals: Mapping[str, Totals]
    """Per currency, summed straight from the input columns, independently of the grouping."""
    line_count: int
    duplicate_count: int = 0
    duplicate_examples: tuple[tuple[str, int], ...] = ()
    anomalies: tuple[str, ...] = field(default_factory=tuple)

    def currency_positions(self, currency: str) -> dict[str, int]:
        """Net position of every party in `currency`."""
        return {p: v for (c, p), v in self.positions.items() if c == currency}


class Clearer:
    """Clearing accumulated chunk by chunk: `add` every chunk, then `result`.

    Duplicate (reference, seq) detection keeps one 64-bit hash per line (8 bytes: 80 MB for
    10 million lines) and reports equal hashes. A false alarm needs a 64-bit collision (about
    n^2 / 2^65: 3e-6 for 10 million lines) and only stops a batch, never lets a duplicate
    through. `source_unique=True` skips the check when the source guarantees uniqueness (the
    ledger's primary key is (entry_id, seq)).
    """

    def __init__(self, *, source_unique: bool = False) -> None:
        self.source_unique = source_unique
        self.gross: dict[GrossKey, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.inputs: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.line_count = 0
        self.hashes: list[npt.NDArray[np.uint64]] = []
        self.duplicate_examples: list[tuple[str, int]] = []
        self.anomalies: dict[str, list[str]] = defaultdict(list)
        self.anomaly_counts: dict[str, int] = defaultdict(int)

    def add(self, chunk: Sequence[ObligationLine] | pd.DataFrame) -> None:
        """Count one chunk of lines (ObligationLine objects or a frame with LINE_COLUMNS)."""
        frame = ensure_frame(chunk)
        if len(frame):
            self._add(frame)

    def _add(self, frame: pd.DataFrame) -> None:
        self.line_count += len(frame)
        self._anomalies(frame)
        # Python ints from here on: chunk and cross-chunk totals can pass 2^63 without loss.
        currencies, inputs, counts = exact_group_sums(frame, ["currency"], ["amount", "points"])
        for cur, amount, count, points in zip(
            currencies, inputs["amount"], counts, inputs["points"], strict=True
        ):
            acc = self.inputs[str(cur)]
            acc[0] += amount
            acc[1] += count
            acc[2] += points
        groups, gross, counts = exact_group_sums(
            frame, ["currency", "payer", "payee", "event_type"], ["amount", "points"]
        )
        for key, amount, count, points in zip(
            groups, gross["amount"], counts, gross["points"], strict=True
        ):
            acc = self.gross[(str(key[0]), str(key[1]), str(key[2]), str(key[3]))]
            acc[0] += amount
            acc[1] += count
            acc[2] += points
        if self.source_unique:
            return
        keys = frame[["reference", "seq"]]
        hashed = pd.util.hash_pandas_object(keys, index=False).to_numpy()
        self.hashes.append(hashed.astype(np.uint64, copy=False))
        if len(self.duplicate_examples) < EXAMPLES:
            dup = keys[keys.duplicated()]
            for ref, seq in zip(dup["reference"].tolist(), dup["seq"].tolist(), strict=True):
                if len(self.duplicate_examples) < EXAMPLES:
                    self.duplicate_examples.append((str(ref), int(seq)))

    def _anomalies(self, frame: pd.DataFrame) -> None:
        checks = {
            AMOUNT_NOT_POSITIVE: frame["amount"] <= 0,
            UNKNOWN_EVENT: ~frame["event_type"].isin(EVENT_TYPES),
            SAME_PARTY: frame["payer"] == frame["payee"],
            NEGATIVE_POINTS: frame["points"] < 0,
        }
        for what, mask in checks.items():
            hits = int(mask.sum())
            if hits:
                self.anomaly_counts[what] += hits
                room = EXAMPLES - len(self.anomalies[what])
                bad = frame.loc[mask, ["reference", "seq"]].head(max(room, 0))
                for ref, seq in zip(bad["reference"].tolist(), bad["seq"].tolist(), strict=True):
                    self.anomalies[what].append(f"{ref}/{seq}")

    def duplicate_count(self) -> int:
        if not self.hashes:
            return 0
        allh = np.concatenate(self.hashes)
        self.hashes = []
        allh.sort()
        return int(np.count_nonzero(allh[1:] == allh[:-1]))

    def result(self) -> Clearing:
        return clearing_of(
            {k: Gross(*v) for k, v in self.gross.items()},
            {c: Totals(*v) for c, v in self.inputs.items()},
            self.line_count,
            duplicate_count=self.duplicate_count(),
            duplicate_examples=tuple(self.duplicate_examples),
            anomalies={w: (self.anomaly_counts[w], ex) for w, ex in self.anomalies.items()},
        )


def clearing_of(
    gross: Mapping[GrossKey, Gross],
    inputs: Mapping[str, Totals],
    line_count: int,
    *,
    duplicate_count: int = 0,
    duplicate_examples: tuple[tuple[str, int], ...] = (),
    anomalies: Mapping[str, tuple[int, Sequence[str]]] | None = None,
) -> Clearing:
    """The Clearing of gross obligations and input totals (summed by whichever engine):
    positions and fee income derived, anomalies (name -> count, "reference/seq" examples)
    worded."""
    ordered = {k: gross[k] for k in sorted(gross)}
    positions: dict[tuple[str, str], int] = defaultdict(int)
    fee_income: dict[str, int] = defaultdict(int)
    for (cur, payer, payee, event_type), g in ordered.items():
        positions[(cur, payee)] += g.amount
        positions[(cur, payer)] -= g.amount
        if event_type == ObligationEvent.FEE:
            fee_income[cur] += g.amount
        elif event_type == ObligationEvent.FEE_REFUND:
            fee_income[cur] -= g.amount
    worded = tuple(
        f"{count} line(s): {w} (e.g. {', '.join(examples)})"
        for w, (count, examples) in sorted((anomalies or {}).items())
    )
    return Clearing(
        gross=MappingProxyType(ordered),
        positions=MappingProxyType({k: positions[k] for k in sorted(positions)}),
        fee_income=MappingProxyType({k: fee_income[k] for k in sorted(fee_income)}),
        input_totals=MappingProxyType({c: inputs[c] for c in sorted(inputs)}),
        line_count=line_count,
        duplicate_count=duplicate_count,
        duplicate_examples=duplicate_examples,
        anomalies=worded,
    )


def clear(
    chunks: Iterable[Sequence[ObligationLine] | pd.DataFrame], *, source_unique: bool = False
) -> Clearing:
    """Aggregate chunks of lines (or frames with LINE_COLUMNS) into gross obligations and nets."""
    acc = Clearer(source_unique=source_unique)
    for chunk in chunks:
        acc.add(chunk)
    return acc.result()


def check_invariants(
    clearing: Clearing,
    *,
    expected: Mapping[str, Totals] | None = None,
    platform_id: str | None = None,
) -> list[str]:
    """Every broken invariant of `clearing`, against optional ledger control totals."""
    errors: list[str] = []
    errors.extend(
        f"unknown currency {cur!r} (not an ISO 4217 code in the settlement table)"
        for cur in clearing.input_totals
        if not is_known_currency(cur)
    )
    net_by_currency: dict[str, int] = defaultdict(int)
    for (cur, _party), net in clearing.positions.items():
        net_by_currency[cur] += net
    for cur, total in sorted(net_by_currency.items()):
        if total != 0:
            errors.append(f"{cur}: net positions sum to {total}, not 0")
    gross_by_currency: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (cur, *_rest), g in clearing.gross.items():
        acc = gross_by_currency[cur]
        acc[0] += g.amount
        acc[1] += g.count
        acc[2] += g.points
    for cur in sorted(set(gross_by_currency) | set(clearing.input_totals)):
        got = Totals(*gross_by_currency[cur])
        want = clearing.input_totals.get(cur, Totals(0, 0, 0))
        if got != want:
            errors.append(f"{cur}: gross totals {got} differ from input totals {want}")
    counted = sum(g.count for g in clearing.gross.values())
    if counted != clearing.line_count:
        errors.append(f"{counted} lines in gross obligations but {clearing.line_count} read")
    if clearing.duplicate_count:
        examples = ", ".join(f"{r}/{s}" for r, s in clearing.duplicate_examples)
        errors.append(
            f"{clearing.duplicate_count} line(s) repeat a (reference, seq) already seen"
            + (f" (e.g. {examples})" if examples else "")
        )
    errors.extend(clearing.anomalies)
    if expected is not None:
        for cur in sorted(set(expected) | set(clearing.input_totals)):
            want_totals = expected.get(cur)
            got_totals = clearing.input_totals.get(cur)
            if want_totals != got_totals:
                errors.append(
                    f"{cur}: lines read {got_totals} differ from ledger control totals {want_totals}"
                )
    if platform_id is not None:
        for cur, income in clearing.fee_income.items():
            held = clearing.positions.get((cur, platform_id), 0)
            if held != income:
                errors.append(
                    f"{cur}: platform {platform_id} nets {held} but fee income is {income}"
                )
    return errors
