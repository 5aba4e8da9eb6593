"""The earning engine: a program's rules, tier multiplier and campaigns applied to one event,
in memory, with every step written down (the explanation).

The order of the steps and how they stack (the written rule; the README repeats it):

1. Rules. A purchase earns by ONE spend rule: of the rules whose selectors (product line,
   merchant category, merchant, channel) all match, the most specific (most selectors set;
   then the earliest in the book), at its rate per major currency unit, if the spend reaches the
   book's minimum. A behaviour event earns its points, if its frequency limit lets it (else 0),
   plus a streak bonus on every `streak_days`-th consecutive business day.
2. Tier. A purchase's rule points are multiplied by the member's tier multiplier.
3. Caps. Steps 1-2 of all events of a member (purchases and behaviours) are capped per business
   day and per month of the issuer's zone; what is cut is a step with negative points.
4. Campaigns (purchases only), by priority then code, on the rule points of step 1 (before the
   tier and the caps): of the multiplier campaigns that apply only the highest multiplier pays;
   every fixed bonus (first purchase, spend X get Y) pays. Each pays at most what is left of its
   budget, and says so when its budget runs out. Campaigns are bounded by budgets, not by caps.

Every step rounds down to whole points (`clearing.core.money.earned_points`): a member's points
are never fractional and never more than a rule gives.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from clearing.core.errors import InvalidInput
from clearing.core.money import multiplied_extra, spend_points
from issuers.repository import MemberRef
from issuers.tiers import TierRef

PURCHASE = "purchase"
REFERRAL = "referral"


class UnknownEvent(InvalidInput):
    code = "unknown_event"
    title = "No behaviour of that name is in force"


@dataclass(frozen=True, slots=True)
class SpendRule:
    """Points per major currency unit for purchases its selectors match (None: any)."""

    code: str
    position: int
    rate: Decimal
    product_line: str | None = None
    merchant_category: str | None = None
    merchant_id: uuid.UUID | None = None
    channel: str | None = None

    @property
    def specificity(self) -> int:
        """How many selectors the rule sets: the more, the more specific."""
        return sum(
            s is not None
            for s in (self.product_line, self.merchant_category, self.merchant_id, self.channel)
        )

    def matches(self, event: Purchase) -> bool:
        """Whether every selector the rule sets is the event's."""
        return (
            (self.product_line is None or self.product_line == event.product_line)
            and (
                self.merchant_category is None or self.merchant_category == event.merchant_category
            )
            and (self.merchant_id is None or self.merchant_id == event.merchant_id)
            and (self.channel is None or self.channel == event.channel)
        )


@dataclass(frozen=True, slots=True)
class Behaviour:
    """A behaviour event's points and frequency limit."""

    event: str
    position: int
    points: int
    frequency: str | None = None
    max_per_period: int = 1
    streak_days: int | None = None
    streak_points: int | None = None
    referee_points: int | None = None


@dataclass(frozen=True, slots=True)
class Book:
    """One version of a program's earning rules."""

    version: int
    effective_from: datetime
    min_spend: int | None
    day_cap: int | None
    month_cap: int | None
    spend_rules: tuple[SpendRule, ...]
    behaviours: Mapping[str, Behaviour]

    def rule_for(self, event: Purchase) -> SpendRule | None:
        """The most specific matching spend rule (the earliest of equally specific ones)."""
        best: SpendRule | None = None
        for rule in self.spend_rules:
            if rule.matches(event) and (best is None or rule.specificity > best.specificity):
                best = rule
        return best


@dataclass(frozen=True, slots=True)
class CampaignRef:
    """A campaign as the engine reads it."""

    id: uuid.UUID
    code: str
    kind: str
    priority: int
    starts_at: datetime
    ends_at: datetime | None
    days_of_month: frozenset[int]
    weekdays: frozenset[int]
    multiplier: Decimal | None
    bonus_points: int | None
    min_spend: int | None
    tiers: frozenset[str]
    min_member_days: int | None
    max_member_days: int | None
    budget: int

    def runs_at(self, at: datetime, day: date) -> bool:
        """Whether the campaign runs at `at`, whose local day (issuer's zone) is `day`."""
        if at < self.starts_at or (self.ends_at is not None and at >= self.ends_at):
            return False
        if self.days_of_month and day.day not in self.days_of_month:
            return False
        return not self.weekdays or day.isoweekday() in self.weekdays

    @property
    def targets_age(self) -> bool:
        """Whether the campaign targets members by membership age."""
        return self.min_member_days is not None or self.max_member_days is not None


@dataclass(frozen=True, slots=True)
class ProgramBook:
    """Every earning book of a program, latest first, its campaigns and its issuer's zone."""

    program_id: uuid.UUID
    zone: str
    books: tuple[Book, ...]
    campaigns: tuple[CampaignRef, ...]

    def book_at(self, at: datetime) -> Book | None:
        """The book in force at `at`."""
        return next((b for b in self.books if b.effective_from <= at), None)


@dataclass(frozen=True, slots=True)
class Purchase:
    """What a purchase's rules read of it."""

    spend: int
    currency: str
    merchant_id: uuid.UUID | None
    merchant_category: str | None
    product_line: str | None
    channel: str | None


@dataclass(frozen=True, slots=True)
class Line:
    """One event to evaluate, with what was read for it."""

    member: MemberRef
    kind: str
    at: datetime
    day: date
    purchase: Purchase | None = None
    tier: TierRef | None = None
    member_since: datetime | None = None
    referee: MemberRef | None = None


@dataclass(slots=True)
class Counter:
    """A member's earning counter as read (and changed in memory before it is written)."""

    count: int = 0
    points: int = 0
    last_day: date | None = None


@dataclass(slots=True)
class Step:
    """One step of an explanation."""

    step: str
    ref: str | None
    points: int
    note: str | None = None

    def as_dict(self) -> dict[str, object]:
        """The step as stored in the event's explanation."""
        return {"step": self.step, "ref": self.ref, "points": self.points, "note": self.note}


@dataclass(slots=True)
class Earned:
    """What one member earns from one event: points, steps and campaign awards."""

    member: MemberRef
    kind: str
    steps: list[Step] = field(default_factory=list)
    awards: list[tuple[uuid.UUID, int]] = field(default_factory=list)

    @property
    def points(self) -> int:
        """The sum of the steps."""
        return sum(s.points for s in self.steps)


@dataclass(slots=True)
class State:
    """Counters and campaign budgets left, read once for a set of events and changed in memory
    as each is evaluated (a file's later lines see its earlier ones)."""

    counters: dict[tuple[uuid.UUID, str], Counter]
    remaining: dict[uuid.UUID, int]
    touched: set[tuple[uuid.UUID, str]] = field(default_factory=set)
    paid: dict[uuid.UUID, int] = field(default_factory=dict)
    short: set[uuid.UUID] = field(default_factory=set)
    slots: dict[tuple[uuid.UUID, int], int] = field(default_factory=dict)
    """The budget slots held, (campaign, slot) -> what each had left (`remaining` sums them)."""
    """Campaigns that paid less than they wanted (their budget, or the part of it held)."""

    def counter(self, member_id: uuid.UUID, key: str) -> Counter:
        """The counter, created in memory if it was never written."""
        self.touched.add((member_id, key))
        return self.counters.setdefault((member_id, key), Counter())


def period_key(frequency: str, day: date) -> str:
    """The label of the business period of `day` that a frequency counts in."""
    if frequency == "once":
        return "ever"
    if frequency == "day":
        return day.isoformat()
    if frequency == "month":
        return f"{day.year:04d}-{day.month:02d}"
    return f"{day.year:04d}"


def day_cap_key(day: date) -> str:
    return f"cap:d:{day.isoformat()}"


def month_cap_key(day: date) -> str:
    return f"cap:m:{day.year:04d}-{day.month:02d}"


FIRST_PURCHASE_KEY = "purchase:count"
REFERRED_KEY = "referred"


def counter_keys(book: Book | None, line: Line) -> list[tuple[uuid.UUID, str]]:
    """The counters evaluating `line` reads (and may change)."""
    if book is None:
        return []
    keys: list[tuple[uuid.UUID, str]] = []
    members = [line.member] + ([line.referee] if line.referee is not None else [])
    for member in members:
        if book.day_cap is not None:
            keys.append((member.id, day_cap_key(line.day)))
        if book.month_cap is not None:
            keys.append((member.id, month_cap_key(line.day)))
    if line.kind == PURCHASE:
        # Every purchase counts, so that a first-purchase campaign published later knows.
        keys.append((line.member.id, FIRST_PURCHASE_KEY))
        return keys
    behaviour = book.behaviours.get(line.kind)
    if behaviour is None:
        return keys
    if behaviour.frequency is not None:
        keys.append((line.member.id, f"ev:{line.kind}:{period_key(behaviour.frequency, line.day)}"))
    if behaviour.streak_days is not None:
        keys.append((line.member.id, f"streak:{line.kind}"))
    if line.referee is not None:
        keys.append((line.referee.id, REFERRED_KEY))
    return keys


def evaluate(
    book: Book | None, campaigns: Iterable[CampaignRef], line: Line, state: State
) -> list[Earned]:
    """What `line` earns: its member's earning, and a referral's referred member's second."""
    if line.kind == PURCHASE:
        assert line.purchase is not None
        return [_purchase(book, campaigns, line, line.purchase, state)]
    behaviour = book.behaviours.get(line.kind) if book is not None else None
    if book is None or behaviour is None:
        raise UnknownEvent(f"no behaviour event {line.kind!r} is in force", field="kind")
    return _behaviour(book, behaviour, line, state)


def _purchase(
    book: Book | None,
    campaigns: Iterable[CampaignRef],
    line: Line,
    event: Purchase,
    state: State,
) -> Earned:
    earned = Earned(line.member, PURCHASE)
    base = 0
    rule = book.rule_for(event) if book is not None else None
    if book is None:
        earned.steps.append(Step("rule", None, 0, "no earning rules in force"))
    elif book.min_spend is not None and event.spend < book.min_spend:
        earned.steps.append(
            Step("min_spend", None, 0, f"spend {event.spend} below the minimum {book.min_spend}")
        )
    elif rule is None:
        earned.steps.append(Step("rule", None, 0, "no spend rule matches"))
    else:
        base = spend_points(event.spend, rule.rate, event.currency)
        earned.steps.append(
            Step("rule", rule.code, base, f"{event.spend} minor units at {rule.rate} per unit")
        )
    tier = line.tier
    if tier is not None and base > 0 and tier.multiplier != 1:
        extra = multiplied_extra(base, tier.multiplier)
        earned.steps.append(Step("tier", tier.code, extra, f"x{tier.multiplier}"))
    if book is not None:
        _cap(book, line.member, line.day, earned, state)
        first = state.counter(line.member.id, FIRST_PURCHASE_KEY)
        _campaigns(campaigns, line, event, base, first.count == 0, earned, state)
        first.count += 1
    return earned


def _cap(book: Book, member: MemberRef, day: date, earned: Earned, state: State) -> None:
    """Cut the rule points (the steps so far) to what the day's and month's caps leave."""
    points = earned.points
    for step, cap, key in (
        ("day_cap", book.day_cap, day_cap_key(day)),
        ("month_cap", book.month_cap, month_cap_key(day)),
    ):
        if cap is None:
            continue
        counter = state.counter(member.id, key)
        allowed = max(0, min(points, cap - counter.points))
        if allowed < points:
            earned.steps.append(Step(step, None, allowed - points, f"cap {cap} reached"))
            points = allowed
    for cap, key in ((book.day_cap, day_cap_key(day)), (book.month_cap, month_cap_key(day))):
        if cap is not None:
            state.counter(member.id, key).points += points


def applies(campaign: CampaignRef, line: Line, event: Purchase, first: bool) -> str | None:
    """Why the campaign does not apply to the purchase (None: it applies)."""
    if not campaign.runs_at(line.at, line.day):
        return "not running"
    if campaign.tiers and (line.tier is None or line.tier.code not in campaign.tiers):
        return "tier not targeted"
    if campaign.targets_age:
        since = line.member_since
        age = (line.at - since).days if since is not None else -1
        if campaign.min_member_days is not None and age < campaign.min_member_days:
            return "membership too new"
        if campaign.max_member_days is not None and age > campaign.max_member_days:
            return "membership too old"
    if campaign.min_spend is not None and event.spend < campaign.min_spend:
        return "spend below the campaign's minimum"
    if campaign.kind == "first_purchase" and not first:
        return "not the first purchase"
    return None


def _campaigns(
    campaigns: Iterable[CampaignRef],
    line: Line,
    event: Purchase,
    base: int,
    first: bool,
    earned: Earned,
    state: State,
) -> None:
    eligible = [c for c in campaigns if applies(c, line, event, first) is None]
    multipliers = [c for c in eligible if c.multiplier is not None]
    best = max(multipliers, key=lambda c: c.multiplier or 0, default=None)
    for campaign in eligible:
        if campaign.multiplier is not None:
            if campaign is not best:
                earned.steps.append(
                    Step("campaign", campaign.code, 0, "not stacked: a higher multiplier applies")
                )
                continue
            want = multiplied_extra(base, campaign.multiplier)
            note = f"x{campaign.multiplier}"
        else:
            want = campaign.bonus_points or 0
            note = f"bonus {want}"
        left = state.remaining.get(campaign.id, 0)
        pay = min(want, left)
        if pay < want:
            note = f"budget exhausted: paid {pay} of {want}"
            state.short.add(campaign.id)
        state.remaining[campaign.id] = left - pay
        state.paid[campaign.id] = state.paid.get(campaign.id, 0) + pay
        earned.steps.append(Step("campaign", campaign.code, pay, note))
        if pay > 0:
            earned.awards.append((campaign.id, pay))


def _behaviour(book: Book, behaviour: Behaviour, line: Line, state: State) -> list[Earned]:
    earned = Earned(line.member, line.kind)
    referee: Earned | None = None
    allowed = True
    if behaviour.frequency is not None:
        key = f"ev:{line.kind}:{period_key(behaviour.frequency, line.day)}"
        counter = state.counter(line.member.id, key)
        if counter.count >= behaviour.max_per_period:
            allowed = False
            earned.steps.append(
                Step(
                    "frequency",
                    behaviour.event,
                    0,
                    f"limit reached: {behaviour.max_per_period} per {behaviour.frequency}",
                )
            )
        else:
            counter.count += 1
    if allowed and line.referee is not None:
        referred = state.counter(line.referee.id, REFERRED_KEY)
        if referred.count > 0:
            allowed = False
            earned.steps.append(
                Step("frequency", behaviour.event, 0, "the referred member was referred before")
            )
        else:
            referred.count += 1
            referee = Earned(line.referee, "referred")
            referee.steps.append(Step("rule", behaviour.event, behaviour.referee_points or 0))
    if allowed:
        earned.steps.append(Step("rule", behaviour.event, behaviour.points))
        if behaviour.streak_days is not None:
            _streak(behaviour, line, earned, state)
    _cap(book, line.member, line.day, earned, state)
    if referee is None:
        return [earned]
    _cap(book, referee.member, line.day, referee, state)
    return [earned, referee]


def _streak(behaviour: Behaviour, line: Line, earned: Earned, state: State) -> None:
    assert behaviour.streak_days is not None
    streak = state.counter(line.member.id, f"streak:{line.kind}")
    if streak.last_day == line.day:
        return
    consecutive = streak.last_day is not None and streak.last_day == line.day - timedelta(days=1)
    streak.count = streak.count + 1 if consecutive else 1
    streak.last_day = line.day
    if streak.count % behaviour.streak_days == 0:
        earned.steps.append(
            Step(
                "streak",
                behaviour.event,
                behaviour.streak_points or 0,
                f"day {streak.count} of a streak",
            )
        )
