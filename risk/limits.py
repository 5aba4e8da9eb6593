"""Limits as data: versioned rules at platform, organisation and program scope, and the
counters that enforce them exactly under concurrency.

A rule fills a slot (kind, action, period); per operation the most specific rule in force for a
slot wins: program, then organisation, then platform. The latest version of a rule is in force;
a disabled latest version is not, so the next less specific rule applies again.

Counters. A daily kind (program issuance, merchant per day, conversions per member into a
target, refunds) counts into one row per key and business day (in the platform's zone): the
upsert that adds an operation returns the day's total with the row locked, so two concurrent
operations on one key are serialised and the second sees the first. A member's rolling window is
made of fixed buckets (minute: six of 10 s, hour: twelve of 5 min, day: twenty-four of 1 h), so
a window reaches back between (n-1) and n bucket widths: a minute window counts the last 50 to
60 seconds. Its key also has a lock row (bucket 0) that every writer upserts first; the buckets
are then summed in a second statement, which (read committed) sees every writer that held the
lock before. Keys are upserted in sorted order, before any balance row (the policy runs before
an operation's first write), so no two operations wait on each other crosswise.

Rules in force are cached per engine for `CACHE_SECONDS`: a change made in this process is seen
at once (the cache is dropped), another process sees it within that time. Reading a version
number per transaction would cost a statement on every operation; a few seconds of delay for a
change of limits is the price we chose.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, cast

from sqlalchemy import BigInteger, Table, Uuid, bindparam, column, func, select, table, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from clearing.core.cache import ProcessCopy
from clearing.core.db import Sql, is_postgres
from clearing.core.errors import InvalidInput, NotFound
from clearing.core.ids import new_id
from clearing.core.models import UTCDateTime
from clearing.core.policy import Action, Decision, OperationContext, Verdict
from clearing.core.timeutil import BusinessCalendar
from clearing.web.context import Caller
from issuers.models import Organisation, Program
from risk.models import LimitCounter, LimitVersion
from risk.schemas import LimitRuleOut, LimitRuleSet

CACHE_SECONDS = 5.0
CODE = "limit_exceeded"
REVIEW_CODE = "limit_review"

REVIEWABLE = frozenset({Action.ACCRUAL, Action.CONVERSION, Action.REFUND})
"""Actions a limit may send to review; a till's authorisation, capture and void only decline."""

PERIODS: dict[str, tuple[int, int]] = {"minute": (10, 6), "hour": (300, 12), "day": (3600, 24)}
"""A member's rolling window: (bucket width in seconds, buckets in the window)."""

_COUNTED = frozenset(Action) - {Action.RATE, Action.MEMBER_STATUS}
_IMPLIED: dict[str, Action] = {
    "program_issuance": Action.ACCRUAL,
    "refund_share": Action.REFUND,
    "conversion_day": Action.CONVERSION,
}
_MERCHANT_ACTIONS = frozenset({Action.AUTHORISATION, Action.CAPTURE, Action.ACCRUAL})
_FIELDS: dict[str, frozenset[str]] = {
    "member_window": frozenset({"max_count", "max_points", "review_count", "review_points"}),
    "single_operation": frozenset({"max_points", "max_amount", "review_points", "review_amount"}),
    "program_issuance": frozenset({"max_points", "review_points"}),
    "merchant_transaction": frozenset({"max_amount", "review_amount"}),
    "merchant_day": frozenset({"max_amount", "review_amount"}),
    "refund_share": frozenset({"max_share", "review_share", "allowance", "trailing_days"}),
    "conversion_day": frozenset({"max_count", "max_points", "review_count", "review_points"}),
}
THRESHOLDS = (
    "max_count",
    "max_points",
    "max_amount",
    "max_share",
    "review_count",
    "review_points",
    "review_amount",
    "review_share",
    "allowance",
    "trailing_days",
)


class InvalidLimit(InvalidInput):
    code = "limit_invalid"
    title = "Invalid limit rule"


class LimitRuleNotFound(NotFound):
    code = "limit_rule_not_found"
    title = "No such limit rule"


# rules in force --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InForce:
    """The version of a rule in force, as the screen reads it."""

    rule_id: uuid.UUID
    version: int
    scope: str
    scope_id: uuid.UUID | None
    kind: str
    action: str
    period: str
    max_count: int | None
    max_points: int | None
    max_amount: int | None
    max_share: Decimal | None
    review_count: int | None
    review_points: int | None
    review_amount: int | None
    review_share: Decimal | None
    allowance: int | None
    trailing_days: int | None

    @property
    def ref(self) -> str:
        """The rule's id as a decision names it."""
        return f"limit:{self.rule_id}"


Slot = tuple[str, str, str]
"""(kind, action, period)."""


@dataclass(frozen=True, slots=True)
class Rules:
    """The rules in force, by slot and scope."""

    by_slot: dict[Slot, dict[tuple[str, uuid.UUID | None], InForce]]
    periods: dict[str, tuple[str, ...]]
    """Per action, the member-window periods some rule is in force for."""

    def find(
        self, slot: Slot, program_id: uuid.UUID | None, org_id: uuid.UUID | None
    ) -> InForce | None:
        """The most specific rule in force for `slot`: program, organisation, platform."""
        scoped = self.by_slot.get(slot)
        if not scoped:
            return None
        return (
            (scoped.get(("program", program_id)) if program_id else None)
            or (scoped.get(("organisation", org_id)) if org_id else None)
            or scoped.get(("platform", None))
        )


def _latest(session: Session) -> list[LimitVersion]:
    rows = session.execute(select(LimitVersion)).scalars().all()
    latest: dict[uuid.UUID, LimitVersion] = {}
    for row in rows:
        if row.rule_id not in latest or row.version > latest[row.rule_id].version:
            latest[row.rule_id] = row
    return sorted(latest.values(), key=lambda r: (r.kind, r.action, r.period, r.scope))


def _load(session: Session) -> Rules:
    by_slot: dict[Slot, dict[tuple[str, uuid.UUID | None], InForce]] = defaultdict(dict)
    periods: dict[str, set[str]] = defaultdict(set)
    for row in _latest(session):
        if not row.enabled:
            continue
        by_slot[(row.kind, row.action, row.period)][(row.scope, row.scope_id)] = InForce(
            row.rule_id,
            row.version,
            row.scope,
            row.scope_id,
            row.kind,
            row.action,
            row.period,
            *(getattr(row, name) for name in THRESHOLDS),
        )
        if row.kind == "member_window":
            periods[row.action].add(row.period)
    return Rules(dict(by_slot), {a: tuple(sorted(p)) for a, p in periods.items()})


_RULES = ProcessCopy(_load, CACHE_SECONDS)


def rules_in_force(session: Session) -> Rules:
    """The rules in force, from this process's copy (see `clearing.core.cache`)."""
    return _RULES.get(session)


# operator's changes ----------------------------------------------------------------------------


def _validated(session: Session, req: LimitRuleSet) -> tuple[str, str]:
    """The rule's action and period, or `InvalidLimit` naming what is wrong."""
    kind = req.kind
    action = req.action or (_IMPLIED[kind].value if kind in _IMPLIED else "")
    if kind in _IMPLIED and action != _IMPLIED[kind]:
        raise InvalidLimit(f"a {kind} rule counts {_IMPLIED[kind]} only", field="action")
    if action not in {a.value for a in _COUNTED}:
        raise InvalidLimit(f"{kind} needs the action it counts", field="action")
    if kind.startswith("merchant_") and action not in _MERCHANT_ACTIONS:
        raise InvalidLimit(
            "a merchant limit counts authorisation, capture or accrual", field="action"
        )
    period = req.period
    if kind == "member_window" and period not in PERIODS:
        raise InvalidLimit("a member window is a minute, an hour or a day", field="period")
    if kind in {"program_issuance", "merchant_day", "refund_share", "conversion_day"}:
        if period not in ("", "day"):
            raise InvalidLimit(f"a {kind} rule counts per day", field="period")
        period = "day"
    if kind in {"single_operation", "merchant_transaction"} and period:
        raise InvalidLimit(f"a {kind} rule looks at one operation", field="period")
    allowed = _FIELDS[kind]
    given = {name for name in THRESHOLDS if getattr(req, name) is not None}
    for name in sorted(given - allowed):
        raise InvalidLimit(f"{name} does not apply to a {kind} rule", field=name)
    if not given & {n for n in allowed if n.startswith("max_") or n.startswith("review_")}:
        raise InvalidLimit("a rule needs at least one threshold", field="kind")
    if action not in REVIEWABLE and any(n.startswith("review_") for n in given):
        raise InvalidLimit(
            f"{action} is decided on the spot: it cannot be sent to review",
            field=next(n for n in sorted(given) if n.startswith("review_")),
        )
    if kind == "refund_share" and req.max_share is None and req.review_share is None:
        raise InvalidLimit("a refund share rule needs max_share or review_share", field="kind")
    if req.scope == "platform":
        if req.scope_id is not None:
            raise InvalidLimit("a platform rule names no scope_id", field="scope_id")
    else:
        model = Organisation if req.scope == "organisation" else Program
        if req.scope_id is None or session.get(model, req.scope_id) is None:
            raise InvalidLimit(f"scope_id must name an existing {req.scope}", field="scope_id")
    return action, period


def _slot_versions(
    session: Session, kind: str, action: str, period: str, scope: str, scope_id: uuid.UUID | None
) -> LimitVersion | None:
    query = (
        select(LimitVersion)
        .where(
            LimitVersion.kind == kind,
            LimitVersion.action == action,
            LimitVersion.period == period,
            LimitVersion.scope == scope,
            LimitVersion.scope_id.is_(None)
            if scope_id is None
            else LimitVersion.scope_id == scope_id,
        )
        .order_by(LimitVersion.version.desc())
        .limit(1)
    )
    return session.execute(query).scalars().first()


def set_rule(session: Session, caller: Caller, req: LimitRuleSet, now: datetime) -> LimitRuleOut:
    """Put a new version of the rule of a slot and scope in force (a new rule if none yet)."""
    action, period = _validated(session, req)
    latest = _slot_versions(session, req.kind, action, period, req.scope, req.scope_id)
    values: dict[str, Any] = {name: getattr(req, name) for name in THRESHOLDS}
    row = LimitVersion(
        rule_id=latest.rule_id if latest else new_id(),
        version=latest.version + 1 if latest else 1,
        scope=req.scope,
        scope_id=req.scope_id,
        kind=req.kind,
        action=action,
        period=period,
        enabled=True,
        note=req.note,
        created_at=now,
        created_by_org=caller.org_id,
        created_by_key=caller.key_id,
        **values,
    )
    session.add(row)
    session.flush()
    _RULES.changed(session)
    return LimitRuleOut.model_validate(row)


def disable_rule(
    session: Session, caller: Caller, rule_id: uuid.UUID, now: datetime, note: str = ""
) -> LimitRuleOut:
    """Take a rule out of force: a new version, disabled (the next less specific rule applies)."""
    latest = _history_rows(session, rule_id)[-1]
    values = {c.key: getattr(latest, c.key) for c in cast(Table, LimitVersion.__table__).c}
    row = LimitVersion(
        **{
            **values,
            "version": latest.version + 1,
            "enabled": False,
            "note": note,
            "created_at": now,
            "created_by_org": caller.org_id,
            "created_by_key": caller.key_id,
        }
    )
    session.add(row)
    session.flush()
    _RULES.changed(session)
    return LimitRuleOut.model_validate(row)


def _history_rows(session: Session, rule_id: uuid.UUID) -> list[LimitVersion]:
    rows = list(
        session.execute(
            select(LimitVersion)
            .where(LimitVersion.rule_id == rule_id)
            .order_by(LimitVersion.version)
        ).scalars()
    )
    if not rows:
        raise LimitRuleNotFound("no limit rule with this id", rule_id=str(rule_id))
    return rows


def rule_history(session: Session, rule_id: uuid.UUID) -> list[LimitRuleOut]:
    """Every version of a rule, oldest first."""
    return [LimitRuleOut.model_validate(r) for r in _history_rows(session, rule_id)]


def list_rules(session: Session) -> list[LimitRuleOut]:
    """The rules in force (the latest version of each, when enabled)."""
    return [LimitRuleOut.model_validate(r) for r in _latest(session) if r.enabled]


# counters --------------------------------------------------------------------------------------

_COUNTERS = cast(Table, LimitCounter.__table__)
_COUNT_PG = Sql(
    text(
        "SELECT key, bucket, count, points, amount FROM risk_limit_count("
        "CAST(:keys AS text[]), CAST(:buckets AS bigint[]), CAST(:counts AS bigint[]),"
        " CAST(:points AS bigint[]), CAST(:amounts AS bigint[]),"
        " CAST(:window_keys AS text[]), CAST(:window_starts AS bigint[]))"
    )
)
"""Migration 0016's function: the counters upserted (and locked), then the rolling windows
summed with a fresh snapshot, in one round trip. The portable twin is `_upsert` and `_windows`
(SQLite); the limits' tests run both."""
_WINDOW = -1
"""The bucket under which `_COUNT_PG` returns a window's sum."""
_CHECKOUTS = table(
    "checkouts",
    column("merchant_id", Uuid()),
    column("created_at", UTCDateTime),
    column("captured_amount", BigInteger()),
)
_CAPTURES = Sql(
    select(func.coalesce(func.sum(_CHECKOUTS.c.captured_amount), 0).label("captured")).where(
        _CHECKOUTS.c.merchant_id == bindparam("b_merchant", type_=Uuid()),
        _CHECKOUTS.c.created_at >= bindparam("b_since", type_=UTCDateTime),
    )
)


@dataclass(frozen=True, slots=True)
class Totals:
    count: int = 0
    points: int = 0
    amount: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.count + other.count, self.points + other.points, self.amount + other.amount
        )

    def __sub__(self, other: Totals) -> Totals:
        return Totals(
            self.count - other.count, self.points - other.points, self.amount - other.amount
        )


@dataclass(slots=True)
class _Counted:
    """One counted check of one operation: the rule, the key it counts into, and the share
    of the operation in it."""

    index: int
    rule: InForce
    key: str
    bucket: int
    start: int | None
    """The first bucket of a rolling window; None for a one-bucket (daily) key."""
    delta: Totals
    captures_since: datetime | None = None


@dataclass(slots=True)
class _Batch:
    counted: list[_Counted] = field(default_factory=list)
    deltas: dict[tuple[str, int], Totals] = field(default_factory=dict)

    def add(self, check: _Counted) -> None:
        self.counted.append(check)
        rows = [(check.key, check.bucket)]
        if check.start is not None:
            rows.append((check.key, 0))
        for row in rows:
            self.deltas[row] = self.deltas.get(row, Totals()) + check.delta


def _count(
    session: Session, deltas: dict[tuple[str, int], Totals], starts: dict[str, int]
) -> tuple[dict[tuple[str, int], Totals], dict[str, Totals]]:
    """Add `deltas` to their counter rows, in key order (locking them), then sum the rolling
    windows from their first buckets: each row's new totals, and each window's."""
    if not is_postgres(session):
        return _upsert(session, deltas), _windows(session, starts)
    ordered = sorted(deltas.items())
    window_keys = sorted(starts)
    rows = _COUNT_PG.rows(
        session,
        {
            "keys": [k for (k, _), _ in ordered],
            "buckets": [b for (_, b), _ in ordered],
            "counts": [d.count for _, d in ordered],
            "points": [d.points for _, d in ordered],
            "amounts": [d.amount for _, d in ordered],
            "window_keys": window_keys,
            "window_starts": [starts[k] for k in window_keys],
        },
    )
    totals: dict[tuple[str, int], Totals] = {}
    windows: dict[str, Totals] = {}
    for r in rows:
        found = Totals(int(r[2]), int(r[3]), int(r[4]))
        if r[1] == _WINDOW:
            windows[r[0]] = found
        else:
            totals[(r[0], r[1])] = found
    return totals, windows


def _upsert(
    session: Session, deltas: dict[tuple[str, int], Totals]
) -> dict[tuple[str, int], Totals]:
    """SQLite: add `deltas` to their counter rows, in key order; each row's new totals."""
    ordered = sorted(deltas.items())
    found: dict[tuple[str, int], Totals] = {}
    for (key, bucket), d in ordered:
        statement = sqlite_insert(_COUNTERS).values(
            key=key, bucket=bucket, count=d.count, points=d.points, amount=d.amount
        )
        upsert = statement.on_conflict_do_update(
            index_elements=["key", "bucket"],
            set_={
                "count": _COUNTERS.c.count + statement.excluded.count,
                "points": _COUNTERS.c.points + statement.excluded.points,
                "amount": _COUNTERS.c.amount + statement.excluded.amount,
            },
        ).returning(_COUNTERS.c.count, _COUNTERS.c.points, _COUNTERS.c.amount)
        row = session.execute(upsert).one()
        found[(key, bucket)] = Totals(row[0], row[1], row[2])
    return found


def _windows(session: Session, starts: dict[str, int]) -> dict[str, Totals]:
    """SQLite: the totals of each rolling key from its window's first bucket on."""
    keys = sorted(starts)
    found: dict[str, Totals] = {}
    for key in keys:
        row = session.execute(
            select(
                func.coalesce(func.sum(_COUNTERS.c.count), 0),
                func.coalesce(func.sum(_COUNTERS.c.points), 0),
                func.coalesce(func.sum(_COUNTERS.c.amount), 0),
            ).where(_COUNTERS.c.key == key, _COUNTERS.c.bucket >= starts[key])
        ).one()
        found[key] = Totals(int(row[0]), int(row[1]), int(row[2]))
    return found


# the policy rule -------------------------------------------------------------------------------


def _over(used: int, limit: int | None) -> bool:
    return limit is not None and used > limit


class LimitRule:
    """The limits as a `risk.policy.Rule`: single-operation maxima are checked as read; counted
    kinds add the operations to their counters (locked in key order) and compare the totals."""

    name = "limits"

    def __init__(self, zone: str = "UTC", cutoff: str = "00:00") -> None:
        self.zone = zone
        self.cutoff = cutoff
        self._calendar = BusinessCalendar(zone, cutoff)

    def screen(
        self, session: Session, operations: Sequence[OperationContext]
    ) -> list[Decision | None]:
        """A decline or review per operation over a limit; None where no limit objects."""
        answers: list[Decision | None] = [None] * len(operations)
        rules = rules_in_force(session)
        if not rules.by_slot:
            return answers
        batch = _Batch()
        # Lines of a bulk file that differ only in their amounts (one member, one program...)
        # count into the same keys: each such group is counted, and judged, as one.
        groups = _groups(operations)
        for first, indices in groups.items():
            op = operations[first]
            single, merchant = self._single_rules(rules, op)
            if single is not None or merchant is not None:
                for i in indices:
                    answers[i] = _single(single, merchant, operations[i])
            total = Totals(
                len(indices),
                sum(operations[i].points for i in indices),
                sum(operations[i].amount for i in indices),
            )
            for check in self._counted(rules, first, op, total):
                batch.add(check)
        if not batch.counted:
            return answers
        starts = {c.key: c.start for c in batch.counted if c.start is not None}
        totals, windows = _count(session, batch.deltas, starts)
        captures: dict[tuple[str, datetime], int] = {}
        # Each operation counts once into a key; walking them in order, each sees what the
        # counters held before this batch, the operations before it, and itself.
        running: dict[str, Totals] = {}
        for check in batch.counted:
            whole = (
                windows[check.key] if check.key in windows else totals[(check.key, check.bucket)]
            )
            running[check.key] = running.get(check.key, whole) - check.delta
        for check in batch.counted:
            before = running[check.key]
            running[check.key] = before + check.delta
            group = groups[check.index]
            if len(group) > 1:
                # Totals only grow within a group: if its last line passes, every line does.
                op = operations[check.index]
                if self._judge(session, op, check, running[check.key], captures) is None:
                    continue
            for i in group:
                op = operations[i]
                one = Totals(1, op.points, op.amount)
                before = before + one
                earlier = answers[i]
                if earlier is not None and earlier.verdict == Verdict.DECLINE:
                    continue
                line = replace(check, index=i, delta=one)
                decision = self._judge(session, op, line, before, captures)
                if decision is not None and (
                    earlier is None or decision.verdict == Verdict.DECLINE
                ):
                    answers[i] = decision
        return answers

    def _single_rules(
        self, rules: Rules, op: OperationContext
    ) -> tuple[InForce | None, InForce | None]:
        """The single-operation and merchant-transaction rules in force for `op`."""
        single = rules.find(("single_operation", op.action, ""), op.program_id, op.caller_org_id)
        merchant = (
            rules.find(("merchant_transaction", op.action, ""), op.program_id, op.merchant_org_id)
            if op.merchant_org_id is not None
            else None
        )
        return single, merchant

    def _counted(
        self, rules: Rules, i: int, op: OperationContext, one: Totals
    ) -> Iterable[_Counted]:
        """The counters `op` counts `one` into (the totals of its group of lines)."""
        # Days are business days (the zone's cut-off), as settlement's and agreements' are.
        day = self._calendar.date_of(op.at).toordinal()
        if op.member_id is not None:
            epoch = int(op.at.timestamp())
            for period in rules.periods.get(op.action, ()):
                rule = rules.find(
                    ("member_window", op.action, period), op.program_id, op.issuer_org_id
                )
                if rule is not None:
                    width, n = PERIODS[period]
                    bucket = epoch // width
                    key = f"mw:{op.member_id}:{op.action}:{period}"
                    yield _Counted(i, rule, key, bucket, bucket - n + 1, one)
        if op.action == Action.ACCRUAL and op.program_id is not None:
            rule = rules.find(
                ("program_issuance", "accrual", "day"), op.program_id, op.issuer_org_id
            )
            if rule is not None:
                yield _Counted(i, rule, f"pi:{op.program_id}", day, None, one)
        if op.merchant_org_id is not None:
            rule = rules.find(("merchant_day", op.action, "day"), op.program_id, op.merchant_org_id)
            if rule is not None:
                key = f"md:{op.merchant_org_id}:{op.action}"
                yield _Counted(i, rule, key, day, None, one)
            if op.action == Action.REFUND:
                rule = rules.find(
                    ("refund_share", "refund", "day"), op.program_id, op.merchant_org_id
                )
                if rule is not None:
                    since = op.at - timedelta(days=rule.trailing_days or 30)
                    key = f"rf:{op.merchant_org_id}"
                    yield _Counted(i, rule, key, day, None, one, since)
        if (
            op.action == Action.CONVERSION
            and op.member_id is not None
            and op.target_program_id is not None
        ):
            rule = rules.find(
                ("conversion_day", "conversion", "day"),
                op.target_program_id,
                op.target_issuer_org_id,
            )
            if rule is not None:
                key = f"cv:{op.member_id}:{op.target_program_id}"
                yield _Counted(i, rule, key, day, None, one)

    def _judge(
        self,
        session: Session,
        op: OperationContext,
        check: _Counted,
        used: Totals,
        captures: dict[tuple[str, datetime], int],
    ) -> Decision | None:
        rule = check.rule
        if rule.kind == "refund_share":
            assert check.captures_since is not None
            assert op.merchant_org_id is not None
            cache_key = (str(op.merchant_org_id), check.captures_since)
            if cache_key not in captures:
                row = _CAPTURES.first(
                    session, {"b_merchant": op.merchant_org_id, "b_since": check.captures_since}
                )
                captures[cache_key] = int(row.captured) if row is not None else 0
            captured = captures[cache_key]
            allowance = rule.allowance or 0
            cap = _share_of(rule.max_share, captured, allowance)
            review = _share_of(rule.review_share, captured, allowance)
            detail = {"measure": "amount", "used": used.amount, "captured": captured}
            if cap is not None and used.amount > cap:
                return _decline(op, rule, {**detail, "limit": cap})
            if review is not None and used.amount > review and op.action in REVIEWABLE:
                return _review(op, rule, {**detail, "limit": review})
            return None
        found: Decision | None = None
        for measure, value, high, low in (
            ("count", used.count, rule.max_count, rule.review_count),
            ("points", used.points, rule.max_points, rule.review_points),
            ("amount", used.amount, rule.max_amount, rule.review_amount),
        ):
            detail = {"measure": measure, "used": value, "period": rule.period}
            if _over(value, high):
                return _decline(op, rule, {**detail, "limit": high})
            if found is None and _over(value, low) and op.action in REVIEWABLE:
                found = _review(op, rule, {**detail, "limit": low})
        return found


def _groups(operations: Sequence[OperationContext]) -> dict[int, list[int]]:
    """Operations that count into the same keys, by the index of the first of each."""
    firsts: dict[tuple[object, ...], int] = {}
    groups: dict[int, list[int]] = {}
    for i, op in enumerate(operations):
        first = firsts.setdefault(
            (
                op.action,
                op.member_id,
                op.program_id,
                op.issuer_org_id,
                op.caller_org_id,
                op.merchant_org_id,
                op.target_program_id,
                op.target_issuer_org_id,
                op.at,
            ),
            i,
        )
        groups.setdefault(first, []).append(i)
    return groups


def _single(
    single: InForce | None, merchant: InForce | None, op: OperationContext
) -> Decision | None:
    """What the single-operation and merchant-transaction rules say of one operation."""
    found: Decision | None = None
    if single is not None:
        found = _measure(op, single, "points", op.points, "max_points", "review_points")
        found = _worse(
            found, _measure(op, single, "amount", op.amount, "max_amount", "review_amount")
        )
    if merchant is not None:
        found = _worse(
            found, _measure(op, merchant, "amount", op.amount, "max_amount", "review_amount")
        )
    return found


def _share_of(share: Decimal | None, captured: int, allowance: int) -> int | None:
    if share is None:
        return None
    return int((share * captured).to_integral_value(ROUND_FLOOR)) + allowance


def _measure(
    op: OperationContext, rule: InForce, measure: str, value: int, high: str, low: str
) -> Decision | None:
    limit = cast(int | None, getattr(rule, high))
    if _over(value, limit):
        return _decline(op, rule, {"measure": measure, "used": value, "limit": limit})
    review = cast(int | None, getattr(rule, low))
    if _over(value, review) and op.action in REVIEWABLE:
        return _review(op, rule, {"measure": measure, "used": value, "limit": review})
    return None


def _worse(a: Decision | None, b: Decision | None) -> Decision | None:
    if a is None:
        return b
    if b is not None and b.verdict == Verdict.DECLINE and a.verdict != Verdict.DECLINE:
        return b
    return a


def _decline(op: OperationContext, rule: InForce, detail: dict[str, Any]) -> Decision:
    return Decision(
        Verdict.DECLINE,
        CODE,
        rule.ref,
        rule.version,
        f"{op.action} over the {rule.scope} {rule.kind} limit on {detail['measure']}"
        f" ({detail['used']} > {detail['limit']})",
        {"kind": rule.kind, **detail},
    )


def _review(op: OperationContext, rule: InForce, detail: dict[str, Any]) -> Decision:
    return Decision(
        Verdict.REVIEW,
        REVIEW_CODE,
        rule.ref,
        rule.version,
        f"{op.action} over the {rule.scope} {rule.kind} review threshold on"
        f" {detail['measure']} ({detail['used']} > {detail['limit']})",
        {"kind": rule.kind, **detail},
    )


__all__ = [
    "CACHE_SECONDS",
    "LimitRule",
    "disable_rule",
    "list_rules",
    "rule_history",
    "rules_in_force",
    "set_rule",
]
