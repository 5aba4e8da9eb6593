"""The daily anomaly scan's features and flags: pure pandas over a day's and the trailing month's
member activity, no database.

Input is one frame of member legs (one row per posting to a member account: `LEG_COLUMNS`), the
members' balances at the start of the day (`OPENING_COLUMNS`) and the organisations
(`ORG_COLUMNS`). Each feature is compared with a robust baseline, the median of the party's own
trailing month (or, with too little history, of its peers), scaled by the median absolute
deviation: the modified z-score (Iglewicz and Hoaglin). Medians and MADs ignore the very
outliers the scan looks for, where a mean and a standard deviation would be pulled towards them.
Every rule also has an absolute floor, so that a member going from 3 points to 40 is never
flagged. Floats live only inside these statistics; the reasons quote points as integers.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

import networkx as nx
import pandas as pd

from clearing.core.kinds import EntryKind, OrgKind
from clearing.core.timeutil import day_end

TRAILING_DAYS = 30
"""The baseline of a feature: the business days before the scanned one."""

LEG_COLUMNS = (
    "entry_id",
    "booked_at",
    "business_date",
    "kind",
    "org_id",
    "member_id",
    "external_id",
    "program",
    "member_created_at",
    "points",
)
"""One row per posting to a member account: the entry (id, UTC time, business date, EntryKind,
the organisation that booked it), the member (id, the issuer's id for it, program, when it was
enrolled) and the signed points of the leg (positive: credited to the member)."""
OPENING_COLUMNS = ("member_id", "opening", "last_active_at")
"""A member's balance at the start of the scanned day and its last posting before it (not
counting expiries; NaT for none). Only members who spent or converted points that day."""
ORG_COLUMNS = ("org_id", "name", "kind")

SCALE_OF_MAD = 1.4826
"""MAD times this estimates the standard deviation of normal data: (x - median) / (1.4826 MAD)
is the modified z-score."""


class Feature(StrEnum):
    """What the scan measures; one flag per subject and feature and day."""

    ACCRUAL_VOLUME = "accrual_volume"
    ORG_ACCRUAL_VOLUME = "org_accrual_volume"
    ROUND_TRIP = "conversion_round_trip"
    QUICK_CONVERSION = "accrual_to_conversion"
    REFUND_SHARE = "refund_share"
    DORMANT_DRAINED = "dormant_drained"
    NEW_MEMBERS = "new_members"


@dataclass(frozen=True)
class Thresholds:
    """When a feature is an outlier: a robust score, a ratio to the baseline and a floor."""

    z: float = 3.5
    """Modified z-score above which a value is an outlier (Iglewicz and Hoaglin's 3.5)."""
    min_history_days: int = 5
    """Fewer active days than this in the trailing month: compare with peers instead."""
    accrual_ratio: float = 10.0
    accrual_floor: int = 20_000
    """Points a member accrues in a day below which it is never flagged."""
    org_accrual_ratio: float = 3.0
    org_accrual_floor: int = 200_000
    round_trip_floor: int = 1_000
    """Points taken out and brought back within the day below which a round trip is let be."""
    quick_minutes: float = 60.0
    quick_floor: int = 10_000
    quick_share: float = 0.5
    """Share of a conversion that points accrued within `quick_minutes` before it must cover."""
    refund_floor: int = 5_000
    refund_share: float = 0.3
    refund_min_scale: float = 0.02
    dormant_share: float = 0.8
    dormant_floor: int = 1_000
    new_members_floor: int = 20
    new_members_ratio: float = 4.0


@dataclass(frozen=True)
class Flag:
    """One outlier: who, which feature, the value against its baseline, and why in words."""

    subject_kind: str
    """'member' or 'organisation'."""
    subject_id: str
    program_code: str | None
    feature: Feature
    observed: float
    baseline: float
    score: float
    reason: str


@dataclass(frozen=True)
class Activity:
    """What the scan reads for one business day: its day and the trailing month before it."""

    day: date
    since: datetime
    """The UTC start of the trailing month (the first of its business days opens)."""
    legs: pd.DataFrame
    openings: pd.DataFrame
    orgs: pd.DataFrame


# business days ------------------------------------------------------------------------------


def business_dates(
    instants: pd.Series, zone: str, cutoff: str, first: date, last: date
) -> pd.Series:
    """The business date of each UTC instant between the start of `first` and the end of
    `last`: each day's window comes from `clearing.core.timeutil.day_end` (one definition of a
    business day, DST included), and each instant is placed among the windows' ends."""
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    ends = pd.DatetimeIndex([day_end(d, zone, cutoff) for d in days])
    at = pd.DatetimeIndex(pd.to_datetime(instants, utc=True))
    found = ends.searchsorted(at, side="right")
    if len(found) and (
        found.max() >= len(days) or at.min() < day_end(first - timedelta(days=1), zone, cutoff)
    ):
        raise ValueError("an instant lies outside the business days asked for")
    return pd.Series([days[i] for i in found], index=instants.index, dtype="object")


# statistics ---------------------------------------------------------------------------------


def robust_z(value: float, median: float, mad: float, min_scale: float) -> float:
    """The modified z-score of `value`, its spread at least `min_scale` (a MAD of 0 would make
    any change infinite)."""
    return (value - median) / max(SCALE_OF_MAD * mad, min_scale)


def _median_mad(values: pd.Series) -> tuple[float, float]:
    median = float(values.median())
    return median, float((values - median).abs().median())


def _ratio(observed: float, baseline: float) -> float:
    return observed / baseline if baseline > 0 else float("inf")


def _times(ratio: float) -> str:
    if ratio == float("inf"):
        return "far above"
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def _pts(points: float) -> str:
    return f"{round(points):,}"


def _duration(minutes: float) -> str:
    if minutes < 120:
        return f"{round(minutes)} minutes"
    if minutes < 48 * 60:
        return f"{round(minutes / 60)} hours"
    return f"{round(minutes / 1440)} days"


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """Rows as named tuples; pandas types each field as a union of every scalar, so Any."""
    yield from frame.itertuples()


def _ages(legs: pd.DataFrame, day: date) -> pd.Series:
    """Days before `day` of each leg's business date (0: the scanned day)."""
    return pd.Series(
        [(day - d).days for d in legs["business_date"]], index=legs.index, dtype="int64"
    )


# the scan -----------------------------------------------------------------------------------


def scan(activity: Activity, limits: Thresholds | None = None) -> list[Flag]:
    """Every flag of the day, in a stable order (feature, subject)."""
    t = limits or Thresholds()
    legs = activity.legs.copy()
    legs["age"] = _ages(legs, activity.day)
    legs = legs[(legs["age"] >= 0) & (legs["age"] <= TRAILING_DAYS)]
    names = {str(r.org_id): str(r.name) for r in _rows(activity.orgs)}
    merchants = {str(r.org_id) for r in _rows(activity.orgs) if r.kind == OrgKind.MERCHANT}
    flags = [
        *accrual_volume(legs, t),
        *org_accrual_volume(legs, names, t),
        *round_trips(legs, t),
        *quick_conversions(legs, t),
        *refund_shares(legs, names, merchants, t),
        *dormant_drained(legs, activity.openings, activity.since, t),
        *new_members(legs, names, merchants, activity.since, t),
    ]
    return sorted(flags, key=lambda f: (f.feature.value, f.subject_kind, f.subject_id))


def accrual_volume(legs: pd.DataFrame, t: Thresholds) -> Iterator[Flag]:
    """Members who accrued far more today than on their own usual day (or their program's)."""
    acc = legs[legs["kind"] == EntryKind.ACCRUAL]
    daily = acc.groupby(["member_id", "age"], as_index=False).agg(
        points=("points", "sum"), program=("program", "first"), external_id=("external_id", "first")
    )
    today = daily[daily["age"] == 0]
    today = today[today["points"] >= t.accrual_floor]
    if today.empty:
        return
    history = daily[daily["age"] > 0]
    own = history.groupby("member_id")["points"]
    peers = {code: _median_mad(g["points"]) for code, g in history.groupby("program")}
    counts = own.size()
    medians = own.median()
    mads = own.apply(lambda s: float((s - s.median()).abs().median()))
    for row in _rows(today):
        days = int(counts.get(row.member_id, 0))
        if days >= t.min_history_days:
            median, mad = float(medians[row.member_id]), float(mads[row.member_id])
            whose, note = "their daily median", ""
        elif row.program in peers:
            median, mad = peers[row.program]
            whose = f"the daily median of {row.program} members"
            note = f" (they accrued on only {days} of them)"
        else:
            continue
        observed = float(row.points)
        ratio = _ratio(observed, median)
        z = robust_z(observed, median, mad, max(0.1 * median, 1.0))
        if ratio >= t.accrual_ratio and z >= t.z:
            yield Flag(
                "member",
                str(row.member_id),
                str(row.program),
                Feature.ACCRUAL_VOLUME,
                observed,
                median,
                z,
                f"member {row.external_id} of {row.program} accrued {_pts(observed)} points "
                f"today, {_times(ratio)} {whose} of {_pts(median)} over the last "
                f"{TRAILING_DAYS} days{note}",
            )


def org_accrual_volume(legs: pd.DataFrame, names: dict[str, str], t: Thresholds) -> Iterator[Flag]:
    """Organisations that funded far more accruals today than on their usual day."""
    acc = legs[legs["kind"] == EntryKind.ACCRUAL]
    daily = acc.groupby(["org_id", "age"], as_index=False)["points"].sum()
    history = daily[daily["age"] > 0]
    for row in _rows(daily[(daily["age"] == 0) & (daily["points"] >= t.org_accrual_floor)]):
        own = history.loc[history["org_id"] == row.org_id, "points"]
        if len(own) < t.min_history_days:
            continue
        median, mad = _median_mad(own)
        observed = float(row.points)
        ratio = _ratio(observed, median)
        z = robust_z(observed, median, mad, max(0.05 * median, 1.0))
        if ratio >= t.org_accrual_ratio and z >= t.z:
            name = names.get(str(row.org_id), str(row.org_id))
            yield Flag(
                "organisation",
                str(row.org_id),
                None,
                Feature.ORG_ACCRUAL_VOLUME,
                observed,
                median,
                z,
                f"{name} funded {_pts(observed)} points of accruals today, {_times(ratio)} its "
                f"daily median of {_pts(median)} over the last {TRAILING_DAYS} days",
            )


def conversions(legs: pd.DataFrame) -> pd.DataFrame:
    """One row per conversion entry: its source member leg beside its target member leg."""
    conv = legs[legs["kind"] == EntryKind.CONVERSION]
    keep = ["entry_id", "booked_at", "age", "member_id", "external_id", "program", "points"]
    source = conv.loc[conv["points"] < 0, keep].rename(
        columns={
            "member_id": "source",
            "external_id": "source_external_id",
            "program": "source_program",
            "points": "points_out",
        }
    )
    source["points_out"] = -source["points_out"]
    target = conv.loc[conv["points"] > 0, ["entry_id", "member_id", "program", "points"]].rename(
        columns={"member_id": "target", "program": "target_program", "points": "points_in"}
    )
    return source.merge(target, on="entry_id", how="inner")


def _people(conv: pd.DataFrame) -> dict[Hashable, str]:
    """Member id -> one id for every member linked to it by conversions (one person's accounts
    in several programs: a conversion needs a link between them)."""
    graph: nx.Graph[Hashable] = nx.Graph()
    graph.add_edges_from(zip(conv["source"], conv["target"], strict=True))
    person: dict[Hashable, str] = {}
    for component in nx.connected_components(graph):
        first = str(min(str(m) for m in component))
        person.update(dict.fromkeys(component, first))
    return person


def round_trips(legs: pd.DataFrame, t: Thresholds) -> Iterator[Flag]:
    """Points converted from A to B and back to A within the day by one member or linked ones."""
    conv = conversions(legs)
    if conv.empty:
        return
    conv["person"] = conv["source"].map(_people(conv))
    today = conv[conv["age"] == 0].sort_values(["booked_at", "entry_id"])
    for _, trips in today.groupby("person", sort=True):
        seen: set[frozenset[str]] = set()
        for first in _rows(trips):
            a, b = str(first.source_program), str(first.target_program)
            pair = frozenset((a, b))
            if a == b or pair in seen:
                continue
            seen.add(pair)
            out = trips[(trips["source_program"] == a) & (trips["target_program"] == b)]
            back = trips[(trips["source_program"] == b) & (trips["target_program"] == a)]
            if back.empty:
                continue
            taken, returned = int(out["points_out"].sum()), int(back["points_in"].sum())
            if min(taken, returned) < t.round_trip_floor:
                continue
            laps = min(len(out), len(back))
            yield Flag(
                "member",
                str(first.source),
                a,
                Feature.ROUND_TRIP,
                float(returned),
                float(taken),
                returned / taken,
                f"member {first.source_external_id} of {a} converted {_pts(taken)} {a} points "
                f"to {b} and got {_pts(returned)} back into {a} within the day "
                f"({laps} round trip{'s' if laps != 1 else ''})",
            )


def quick_conversions(legs: pd.DataFrame, t: Thresholds) -> Iterator[Flag]:
    """Members whose points left by conversion within minutes of being accrued."""
    conv = conversions(legs)
    today = conv[conv["age"] == 0]
    if today.empty:
        return
    acc = legs.loc[legs["kind"] == EntryKind.ACCRUAL, ["member_id", "booked_at", "points"]]
    acc = acc.rename(columns={"member_id": "source", "points": "accrued"})
    acc = acc.sort_values("booked_at", kind="stable")
    acc["cumulative"] = acc.groupby("source")["accrued"].cumsum()
    acc["last_accrual_at"] = acc["booked_at"]
    conv = conv.sort_values("booked_at", kind="stable").reset_index(drop=True)
    # Accrued points up to a conversion, less those up to `quick_minutes` before it: what was
    # accrued just before (merge_asof keeps the left order, so rows line up by position).
    at = pd.merge_asof(
        conv[["source", "booked_at"]], acc[["source", "booked_at", "cumulative", "last_accrual_at"]],
        on="booked_at", by="source", direction="backward",
    )  # fmt: skip
    window = conv[["source", "booked_at"]].copy()
    window["booked_at"] = window["booked_at"] - pd.Timedelta(minutes=t.quick_minutes)
    before = pd.merge_asof(
        window, acc[["source", "booked_at", "cumulative"]],
        on="booked_at", by="source", direction="backward", allow_exact_matches=False,
    )  # fmt: skip
    conv["delay"] = (conv["booked_at"] - at["last_accrual_at"]).dt.total_seconds() / 60
    conv["recent"] = at["cumulative"].fillna(0) - before["cumulative"].fillna(0)
    baseline = float(conv["delay"].dropna().median()) if conv["delay"].notna().any() else 0.0
    quick = conv[
        (conv["age"] == 0)
        & (conv["delay"] <= t.quick_minutes)
        & (conv["recent"] >= t.quick_share * conv["points_out"])
    ].copy()
    quick["overlap"] = quick[["recent", "points_out"]].min(axis=1)
    for member, rows in quick.groupby("source", sort=True):
        moved = float(rows["overlap"].sum())
        if moved < t.quick_floor:
            continue
        first = next(_rows(rows))
        delay = float(rows["delay"].min())
        yield Flag(
            "member",
            str(member),
            str(first.source_program),
            Feature.QUICK_CONVERSION,
            delay,
            baseline,
            baseline / max(delay, 1.0),
            f"member {first.source_external_id} of {first.source_program} converted "
            f"{_pts(float(rows['points_out'].sum()))} points out {_duration(delay)} after "
            f"accruing {_pts(float(rows['recent'].max()))}; the median conversion comes "
            f"{_duration(baseline)} after the member's last accrual",
        )


def refund_shares(
    legs: pd.DataFrame, names: dict[str, str], merchants: set[str], t: Thresholds
) -> Iterator[Flag]:
    """Merchants whose refunds today are a far larger share of their captures than usual."""
    moved = legs[legs["kind"].isin([EntryKind.CHECKOUT_CAPTURE, EntryKind.CHECKOUT_REFUND])]
    moved = moved[moved["org_id"].astype(str).isin(merchants)]
    if moved.empty:
        return
    signed = moved.assign(
        captured=(-moved["points"]).where(moved["kind"] == EntryKind.CHECKOUT_CAPTURE, 0),
        refunded=moved["points"].where(moved["kind"] == EntryKind.CHECKOUT_REFUND, 0),
    )
    daily = signed.groupby(["org_id", "age"], as_index=False)[["captured", "refunded"]].sum()
    # A refund today may return an older capture: a quiet day of captures is measured against
    # the merchant's usual day, not its own small total.
    usual = daily[daily["age"] > 0].groupby("org_id")["captured"].median()
    daily["base"] = daily["captured"].clip(lower=daily["org_id"].map(usual).fillna(0)).clip(lower=1)
    daily["share"] = daily["refunded"] / daily["base"]
    history = daily[(daily["age"] > 0) & (daily["captured"] > 0)]
    peer = _median_mad(history["share"]) if not history.empty else (0.0, 0.0)
    for row in _rows(daily[(daily["age"] == 0) & (daily["refunded"] >= t.refund_floor)]):
        own = history.loc[history["org_id"] == row.org_id, "share"]
        median, mad = _median_mad(own) if len(own) >= t.min_history_days else peer
        share = float(row.share)
        z = robust_z(share, median, mad, t.refund_min_scale)
        if share >= t.refund_share and z >= t.z:
            name = names.get(str(row.org_id), str(row.org_id))
            yield Flag(
                "organisation",
                str(row.org_id),
                None,
                Feature.REFUND_SHARE,
                share,
                median,
                z,
                f"{name} refunded {_pts(row.refunded)} points today, {share:.0%} of "
                + (
                    f"the {_pts(row.captured)} points it captured today"
                    if row.captured >= row.base
                    else f"the {_pts(row.base)} points it captures on a usual day "
                    f"(only {_pts(row.captured)} today)"
                )
                + f"; its daily median is {median:.0%}",
            )


def dormant_drained(
    legs: pd.DataFrame, openings: pd.DataFrame, since: datetime, t: Thresholds
) -> Iterator[Flag]:
    """Members idle for the whole trailing month who spent or converted most of their points."""
    today = legs[legs["age"] == 0]
    spent = today[
        today["kind"].isin([EntryKind.CHECKOUT_CAPTURE, EntryKind.CONVERSION])
        & (today["points"] < 0)
    ]
    if spent.empty:
        return
    out = spent.groupby("member_id").agg(
        out=("points", "sum"),
        program=("program", "first"),
        external_id=("external_id", "first"),
        created=("member_created_at", "first"),
    )
    out["out"] = -out["out"]
    inflow = today[today["points"] > 0].groupby("member_id")["points"].sum()
    lively = legs[(legs["age"] > 0) & (legs["kind"] != EntryKind.EXPIRY)]
    out = out[~out.index.isin(set(lively["member_id"]))]
    out = out.join(openings.set_index("member_id"), how="inner")
    out["inflow"] = inflow.reindex(out.index).fillna(0)
    start = pd.Timestamp(since)
    for row in _rows(out.rename_axis("member_id").reset_index()):
        if pd.notna(row.created) and pd.Timestamp(row.created) >= start:
            continue  # enrolled within the month: new, not dormant
        available = float(row.opening) + float(row.inflow)
        drained = float(row.out)
        share = drained / max(available, 1.0)
        if drained < t.dormant_floor or share < t.dormant_share:
            continue
        idle = (
            f"inactive since {pd.Timestamp(row.last_active_at).date()}"
            if pd.notna(row.last_active_at)
            else f"inactive for the last {TRAILING_DAYS} days"
        )
        yield Flag(
            "member",
            str(row.member_id),
            str(row.program),
            Feature.DORMANT_DRAINED,
            drained,
            available,
            share,
            f"member {row.external_id} of {row.program}, {idle}, spent or converted "
            f"{_pts(drained)} of their {_pts(available)} points today ({share:.0%})",
        )


def new_members(
    legs: pd.DataFrame, names: dict[str, str], merchants: set[str], since: datetime, t: Thresholds
) -> Iterator[Flag]:
    """Merchants whose accruals brought far more new members today than on their usual day."""
    acc = legs[legs["kind"] == EntryKind.ACCRUAL]
    start = pd.Timestamp(since)
    created = pd.to_datetime(acc["member_created_at"], utc=True)
    fresh = acc[created >= start].sort_values(["booked_at", "entry_id"], kind="stable")
    # A member's first accrual names the merchant that brought it; enrolled before the month,
    # its first accrual may lie outside the legs read, so it is not counted anywhere.
    first = fresh.drop_duplicates("member_id", keep="first")
    first = first[first["org_id"].astype(str).isin(merchants)]
    if first.empty:
        return
    counts = first.groupby(["org_id", "age"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=range(TRAILING_DAYS + 1), fill_value=0)
    for org_id, days in zip(counts.index, counts.to_numpy(dtype=float), strict=True):
        observed = float(days[0])
        if observed < t.new_members_floor:
            continue
        median, mad = _median_mad(pd.Series(days[1:]))
        ratio = _ratio(observed, max(median, 1.0))
        z = robust_z(observed, median, mad, max(median, 1.0) ** 0.5)
        if ratio >= t.new_members_ratio and z >= t.z:
            name = names.get(str(org_id), str(org_id))
            yield Flag(
                "organisation",
                str(org_id),
                None,
                Feature.NEW_MEMBERS,
                observed,
                median,
                z,
                f"{name} brought {round(observed)} new members today (their first accrual, "
                f"funded by it); its daily median over the last {TRAILING_DAYS} days is "
                f"{median:g}",
            )
