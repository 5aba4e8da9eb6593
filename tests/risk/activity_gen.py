"""Generated member activity for the anomaly scan: a clean month of many members, and planted
anomalies (one of each feature) to lay on top of its last day."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from clearing.core.kinds import EntryKind
from clearing.core.timeutil import day_end
from risk.anomalies import LEG_COLUMNS, TRAILING_DAYS, Activity, Feature

ZONE = "Asia/Shanghai"
CUTOFF = "00:00"
DAY = date(2026, 11, 20)
PROGRAMS = ("BANKA", "BANKB", "MOBILE")
ISSUERS = {"BANKA": "org-bank-a", "BANKB": "org-bank-b", "MOBILE": "org-carrier"}
MERCHANTS = ("org-shop", "org-cafe", "org-kiosk")
ORGS = pd.DataFrame(
    [
        ("org-bank-a", "Bank A", "issuer"),
        ("org-bank-b", "Bank B", "issuer"),
        ("org-carrier", "Carrier", "issuer"),
        ("org-shop", "Shop", "merchant"),
        ("org-cafe", "Cafe", "merchant"),
        ("org-kiosk", "Kiosk", "merchant"),
    ],
    columns=["org_id", "name", "kind"],
)


@dataclass
class Person:
    """A generated member: its habits and its running balance."""

    member_id: str
    external_id: str
    program: str
    created_at: datetime
    balance: int
    dormant: bool = False
    accrue_chance: float = 0.0
    typical: float = 0.0
    merchant: str = ""
    partner: str | None = None
    last_active_at: datetime | None = None
    last_active_before: datetime | None = None
    """Dormant members: their last activity, before the month."""


@dataclass
class Month:
    """A generated month: members, their legs, and a counter for fresh ids."""

    rng: np.random.Generator
    people: dict[str, Person] = field(default_factory=dict)
    rows: list[tuple[object, ...]] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def window(self, age: int) -> tuple[datetime, datetime]:
        """The UTC window of the business day `age` days before DAY."""
        day = DAY - timedelta(days=age)
        return day_end(day - timedelta(days=1), ZONE, CUTOFF), day_end(day, ZONE, CUTOFF)

    def at(self, age: int, hour: float | None = None) -> datetime:
        """A random instant of that day, or its start plus `hour` hours."""
        start, end = self.window(age)
        seconds = (end - start).total_seconds()
        offset = hour * 3600 if hour is not None else float(self.rng.uniform(0, seconds - 1))
        return start + timedelta(seconds=offset)

    def leg(
        self, entry: str, at: datetime, kind: EntryKind, org: str, person: Person, points: int
    ) -> None:
        """Append one member leg and keep the member's balance."""
        self.rows.append(
            (
                entry,
                at,
                _business_date(at),
                str(kind),
                org,
                person.member_id,
                person.external_id,
                person.program,
                person.created_at,
                points,
            )
        )
        person.balance += points
        if kind != EntryKind.EXPIRY:
            person.last_active_at = at

    def entry(self) -> str:
        """A fresh entry id."""
        return f"e{next(self.ids):07d}"

    def member(self, program: str, created_at: datetime, balance: int, prefix: str = "m") -> Person:
        """A new member of `program`."""
        number = next(self.ids)
        person = Person(
            f"{prefix}{number:06d}", f"{prefix.upper()}{number}", program, created_at, balance
        )
        self.people[person.member_id] = person
        return person

    def accrue(self, person: Person, at: datetime, points: int, org: str | None = None) -> None:
        """Points credited to `person`, funded by `org` (default: its issuer)."""
        self.leg(
            self.entry(), at, EntryKind.ACCRUAL, org or ISSUERS[person.program], person, points
        )

    def capture(self, person: Person, at: datetime, points: int, merchant: str) -> str:
        """A checkout capture; returns its entry id."""
        entry = self.entry()
        self.leg(entry, at, EntryKind.CHECKOUT_CAPTURE, merchant, person, -points)
        return entry

    def refund(self, person: Person, at: datetime, points: int, merchant: str) -> None:
        """A refund of captured points."""
        self.leg(self.entry(), at, EntryKind.CHECKOUT_REFUND, merchant, person, points)

    def convert(self, source: Person, target: Person, at: datetime, out: int, into: int) -> None:
        """A conversion: `out` points leave `source`, `into` arrive at `target`."""
        entry = self.entry()
        self.leg(entry, at, EntryKind.CONVERSION, ISSUERS[source.program], source, -out)
        self.leg(entry, at, EntryKind.CONVERSION, ISSUERS[source.program], target, into)

    def activity(self) -> Activity:
        """The month as the scan reads it."""
        legs = pd.DataFrame(self.rows, columns=list(LEG_COLUMNS))
        legs["booked_at"] = pd.to_datetime(legs["booked_at"], utc=True)
        legs["member_created_at"] = pd.to_datetime(legs["member_created_at"], utc=True)
        start = self.window(0)[0]
        today = legs[legs["booked_at"] >= start]
        before = legs[legs["booked_at"] < start]
        spenders = set(today.loc[today["points"] < 0, "member_id"])
        rows = []
        for member in sorted(spenders):
            person = self.people[member]
            opening = person.balance - int(today.loc[today["member_id"] == member, "points"].sum())
            lively = before[(before["member_id"] == member) & (before["kind"] != EntryKind.EXPIRY)]
            last = lively["booked_at"].max() if not lively.empty else person.last_active_before
            rows.append((member, opening, last))
        openings = pd.DataFrame(rows, columns=["member_id", "opening", "last_active_at"])
        return Activity(DAY, self.window(TRAILING_DAYS)[0], legs, openings, ORGS)


def _business_date(at: datetime) -> date:
    # A cut-off at midnight: the business date is the local calendar date.
    return pd.Timestamp(at).tz_convert(ZONE).date()


def clean_month(seed: int, members: int = 400) -> Month:
    """A month of ordinary activity: most members accrue small amounts on many days, spend at a
    merchant now and then, some refund, a few convert to a linked member in another program; a
    tenth are dormant; merchants bring a handful of new members a day; a few dormant members
    come back on the last day and spend a part of their points."""
    rng = np.random.default_rng(seed)
    month = Month(rng)
    long_ago = month.window(TRAILING_DAYS + 200)[0]
    for _ in range(members):
        program = str(rng.choice(PROGRAMS))
        person = month.member(program, long_ago, int(rng.integers(2_000, 60_000)))
        if rng.random() < 0.12:
            person.dormant = True
            person.last_active_before = month.window(int(rng.integers(40, 200)))[0]
            continue
        person.accrue_chance = float(rng.uniform(0.2, 0.9))
        person.typical = float(rng.lognormal(np.log(300), 0.8))
        person.merchant = str(rng.choice(MERCHANTS))
    regular = [p for p in month.people.values() if not p.dormant]
    for person in regular[: len(regular) // 3]:
        other = str(rng.choice([c for c in PROGRAMS if c != person.program]))
        partner = month.member(other, long_ago, int(rng.integers(1_000, 20_000)))
        partner.accrue_chance, partner.typical = 0.1, 200.0
        partner.merchant = str(rng.choice(MERCHANTS))
        person.partner = partner.member_id
    captures: list[tuple[Person, str, int, int]] = []
    for age in range(TRAILING_DAYS, -1, -1):
        for merchant in MERCHANTS:
            for _ in range(int(rng.poisson(2))):
                fresh = month.member(str(rng.choice(PROGRAMS)), month.at(age, 0.0), 0, "n")
                fresh.accrue_chance = 0.3
                fresh.typical = float(rng.lognormal(np.log(200), 0.5))
                fresh.merchant = merchant
                month.accrue(fresh, month.at(age), int(fresh.typical), merchant)
        for person in list(month.people.values()):
            if person.dormant:
                continue
            if rng.random() < person.accrue_chance:
                points = max(1, int(rng.lognormal(np.log(max(person.typical, 1)), 0.4)))
                if rng.random() < 0.02:
                    points *= int(rng.integers(3, 9))  # a promotion, a large purchase
                funder = person.merchant if rng.random() < 0.4 else None
                month.accrue(person, month.at(age), points, funder)
            if rng.random() < 0.08 and person.balance > 500:
                points = int(rng.integers(100, max(101, person.balance // 3)))
                entry_at = month.at(age)
                month.capture(person, entry_at, points, person.merchant)
                captures.append((person, person.merchant, points, age))
            if person.partner is not None and rng.random() < 0.03 and person.balance > 2_000:
                target = month.people[person.partner]
                out = int(rng.integers(1_000, person.balance // 2 + 1_001))
                month.convert(person, target, month.at(age), out, out // 2)
                if rng.random() < 0.2 and target.balance > 400:
                    # Some members send a little back the same day: small round trips.
                    back = int(rng.integers(100, 400))
                    month.convert(target, person, month.at(age), back, back * 2)
        for person, merchant, points, when in list(captures):
            if when - age < 7 and rng.random() < 0.005:
                month.refund(person, month.at(age), points, merchant)
                captures.remove((person, merchant, points, when))
    for person in [p for p in month.people.values() if p.dormant]:
        if rng.random() < 0.05 and person.balance > 200:
            share = float(rng.uniform(0.1, 0.5))
            month.capture(
                person, month.at(0), int(person.balance * share), str(rng.choice(MERCHANTS))
            )
    return month


@dataclass(frozen=True)
class Planted:
    """An anomaly laid on the last day: the subject and feature the scan must flag."""

    feature: Feature
    subject_id: str


def plant_all(month: Month) -> list[Planted]:
    """One anomaly of each feature on the last day of `month`; returns what must be flagged."""
    rng = month.rng
    people = list(month.people.values())
    linked = [p for p in people if p.partner is not None]
    partners = {p.partner for p in linked}
    steady = [
        p
        for p in people
        if not p.dormant
        and p.accrue_chance > 0.6
        and p.member_id[0] == "m"
        and p.partner is None
        and p.member_id not in partners
    ]
    planted: list[Planted] = []

    big = steady[0]
    month.accrue(big, month.at(0, 9.0), 480_000)
    planted.append(Planted(Feature.ACCRUAL_VOLUME, big.member_id))

    # A compromised partner key: Kiosk funds 20,000 points into each of 80 members.
    regular = [p for p in people if not p.dormant and p is not big and p not in linked[:2]]
    for person in regular[:80]:
        month.accrue(person, month.at(0), 15_000, "org-kiosk")
    planted.append(Planted(Feature.ORG_ACCRUAL_VOLUME, "org-kiosk"))

    looper, twin = linked[0], month.people[str(linked[0].partner)]
    points = 10_000
    for lap in range(3):
        into = points * 2
        month.convert(looper, twin, month.at(0, 10 + lap), points, into)
        back = int(into * 1.23)
        month.convert(twin, looper, month.at(0, 10.5 + lap), into, back)
        points = back
    planted.append(Planted(Feature.ROUND_TRIP, looper.member_id))

    mule = linked[1]
    month.accrue(mule, month.at(0, 14.0), 60_000)
    month.convert(mule, month.people[str(mule.partner)], month.at(0, 14.07), 60_000, 30_000)
    planted.append(Planted(Feature.QUICK_CONVERSION, mule.member_id))

    # Cafe refunds to itself: most of today's captures come straight back.
    for person in regular[-40:]:
        month.capture(person, month.at(0, 15.0), 3_000, "org-cafe")
        month.refund(person, month.at(0, 15.5), 2_800, "org-cafe")
    planted.append(Planted(Feature.REFUND_SHARE, "org-cafe"))

    sleeper = next(p for p in people if p.dormant and p.balance > 5_000)
    month.capture(sleeper, month.at(0, 3.0), int(sleeper.balance * 0.95), "org-shop")
    planted.append(Planted(Feature.DORMANT_DRAINED, sleeper.member_id))

    for _ in range(60):
        fresh = month.member(str(rng.choice(PROGRAMS)), month.at(0, 1.0), 0, "f")
        month.accrue(fresh, month.at(0), 500, "org-shop")
    planted.append(Planted(Feature.NEW_MEMBERS, "org-shop"))
    return planted
