"""`clearing risk ...`: the operator's risk controls from the command line."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from clearing.core.kinds import OrgKind
from clearing.web.context import Caller
from risk.schemas import LimitRuleOut, LimitRuleSet

if TYPE_CHECKING:
    from risk.schemas import FreezeOut

risk_app = typer.Typer(
    help="Risk controls: limits, freezes, the blocklist, reviews, decisions, the anomaly scan.",
    no_args_is_help=True,
)


def database(ctx: typer.Context) -> Engine:
    """The configured database, opened (schema checked) by the command line that mounts this."""
    open_database: Callable[[], Engine] = ctx.obj
    if not callable(open_database):
        raise RuntimeError("the risk commands run under `clearing`, which opens the database")
    return open_database()


def business_date(text: str) -> date:
    """A YYYY-MM-DD option, or one line saying it is not one."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {text!r}") from None


@risk_app.command("decisions")
def decisions_command(
    ctx: typer.Context,
    day: Annotated[
        date | None,
        typer.Option("--date", help="Business day, YYYY-MM-DD", parser=business_date),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first")] = 50,
) -> None:
    """List recent risk decisions (declines, reviews and the allows that follow a review)."""
    from clearing.core.config import Settings
    from clearing.core.db import transaction
    from risk.decisions import list_decisions

    engine = database(ctx)
    with transaction(engine) as session:
        found = list_decisions(session, day=day, zone=Settings.from_env().zone, limit=limit)
    for d in found:
        typer.echo(
            f"{d.decided_at.isoformat()} {d.action} {d.outcome} {d.code or '-'}"
            f" rule={d.rule_id or '-'}@{d.rule_version or '-'} {d.reason}"
        )
    if not found:
        typer.echo("no decisions")


# limits ------------------------------------------------------------------------------------------

limits_app = typer.Typer(help="Limit rules: list, set, history.", no_args_is_help=True)
risk_app.add_typer(limits_app, name="limits")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _line(rule: LimitRuleOut) -> str:
    from risk.limits import THRESHOLDS

    thresholds = " ".join(
        f"{name}={getattr(rule, name)}" for name in THRESHOLDS if getattr(rule, name) is not None
    )
    scope = rule.scope if rule.scope_id is None else f"{rule.scope}:{rule.scope_id}"
    return (
        f"{rule.rule_id} v{rule.version} {'on' if rule.enabled else 'off'} {scope}"
        f" {rule.kind} {rule.action}{'/' + rule.period if rule.period else ''} {thresholds}"
        f" by {rule.created_by_key or '-'} at {rule.created_at.isoformat()}"
    )


@limits_app.command("list")
def limits_list(ctx: typer.Context) -> None:
    """List the limit rules in force."""
    from clearing.core.db import transaction
    from risk.limits import list_rules

    with transaction(database(ctx)) as session:
        for rule in list_rules(session):
            typer.echo(_line(rule))


@limits_app.command("history")
def limits_history(ctx: typer.Context, rule_id: str) -> None:
    """Every version of one limit rule, oldest first."""
    from clearing.core.db import transaction
    from clearing.core.errors import ClearingError
    from risk.limits import rule_history

    try:
        wanted = uuid.UUID(rule_id)
    except ValueError:
        _fail(f"not a rule id: {rule_id!r}")
    try:
        with transaction(database(ctx)) as session:
            found = rule_history(session, wanted)
    except ClearingError as error:
        _fail(str(error))
    for rule in found:
        typer.echo(_line(rule))


@limits_app.command("set")
def limits_set(
    ctx: typer.Context,
    kind: Annotated[str, typer.Option(help="member_window, single_operation, ...")],
    action: Annotated[str, typer.Option(help="The operation counted")] = "",
    period: Annotated[str, typer.Option(help="minute, hour or day")] = "",
    scope: Annotated[str, typer.Option(help="platform, organisation or program")] = "platform",
    scope_id: Annotated[str | None, typer.Option(help="The organisation or program id")] = None,
    max_count: Annotated[int | None, typer.Option()] = None,
    max_points: Annotated[int | None, typer.Option()] = None,
    max_amount: Annotated[int | None, typer.Option()] = None,
    max_share: Annotated[str | None, typer.Option()] = None,
    review_count: Annotated[int | None, typer.Option()] = None,
    review_points: Annotated[int | None, typer.Option()] = None,
    review_amount: Annotated[int | None, typer.Option()] = None,
    review_share: Annotated[str | None, typer.Option()] = None,
    allowance: Annotated[int | None, typer.Option()] = None,
    trailing_days: Annotated[int | None, typer.Option()] = None,
    note: Annotated[str, typer.Option()] = "",
) -> None:
    """Put a new version of a limit rule in force."""
    from pydantic import ValidationError

    from clearing.core.db import transaction
    from clearing.core.errors import ClearingError
    from clearing.core.timeutil import utcnow
    from clearing.web.context import Caller
    from issuers.organisations import platform
    from risk.limits import set_rule

    fields = {
        "kind": kind,
        "action": action,
        "period": period,
        "scope": scope,
        "scope_id": scope_id,
        "max_count": max_count,
        "max_points": max_points,
        "max_amount": max_amount,
        "max_share": max_share,
        "review_count": review_count,
        "review_points": review_points,
        "review_amount": review_amount,
        "review_share": review_share,
        "allowance": allowance,
        "trailing_days": trailing_days,
        "note": note,
    }
    try:
        req = LimitRuleSet.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as error:
        first = error.errors()[0]
        _fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    try:
        with transaction(database(ctx)) as session:
            operator = Caller(platform(session).id, "platform", "cli")
            rule = set_rule(session, operator, req, utcnow())
    except ClearingError as error:
        _fail(str(error))
    typer.echo(_line(rule))


# the anomaly scan -----------------------------------------------------------------------------


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 instant: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@risk_app.command("scan")
def scan_command(
    ctx: typer.Context,
    day: Annotated[
        date,
        typer.Option("--date", help="Business day to scan, YYYY-MM-DD", parser=business_date),
    ],
    as_of: Annotated[
        datetime | None,
        typer.Option(
            help="Record flags as of this ISO 8601 instant (default: now)", parser=_instant
        ),
    ] = None,
) -> None:
    """Scan one business day for anomalies; prints one line per flag (a re-run adds no twins)."""
    from clearing.core.config import Settings
    from clearing.core.timeutil import utcnow
    from risk.scan import run_scan, summary

    engine = database(ctx)
    try:
        result = run_scan(engine, day, Settings.from_env(), as_of or utcnow())
    finally:
        engine.dispose()
    for line in summary(result.anomalies):
        typer.echo(line)
    typer.echo(f"{day}: {len(result.anomalies)} anomalies, {result.created} new")


# freezes, the blocklist and reviews ------------------------------------------------------------


def _console(session: Session) -> Caller:
    """The operator at the console: the platform organisation, acting without a signing key."""
    from issuers.organisations import platform

    return Caller(platform(session).id, OrgKind.PLATFORM)


class Subject(StrEnum):
    member = "member"
    program = "program"
    organisation = "organisation"


Reason = Annotated[str, typer.Option("--reason", help="Why (recorded with who and when)")]


@risk_app.command("freeze")
def freeze_command(
    ctx: typer.Context,
    subject: Annotated[Subject, typer.Argument(help="What to freeze")],
    reason: Reason,
    program: Annotated[str | None, typer.Option(help="Program code (member, program)")] = None,
    member: Annotated[str | None, typer.Option(help="The issuer's id of the member")] = None,
    org: Annotated[str | None, typer.Option(help="Organisation id (organisation)")] = None,
    points: Annotated[
        int | None, typer.Option(help="Freeze only this many of the member's points")
    ] = None,
) -> None:
    """Freeze a member, part of its points, a program or an organisation."""
    from clearing.core.db import transaction
    from clearing.core.timeutil import utcnow
    from risk.freezes import freeze
    from risk.schemas import FreezeCreate

    req = FreezeCreate.model_validate(
        {
            "subject": subject.value,
            "program": program,
            "external_id": member,
            "org_id": org,
            "points": points,
            "reason": reason,
        }
    )
    with transaction(database(ctx)) as session:
        out = freeze(session, _console(session), req, utcnow())
    typer.echo(f"frozen {_freeze_line(out)}")


@risk_app.command("unfreeze")
def unfreeze_command(
    ctx: typer.Context,
    freeze_id: Annotated[uuid.UUID, typer.Argument(help="The freeze's id")],
    reason: Reason,
) -> None:
    """Lift a freeze."""
    from clearing.core.db import transaction
    from clearing.core.timeutil import utcnow
    from risk.freezes import unfreeze

    with transaction(database(ctx)) as session:
        out = unfreeze(session, _console(session), freeze_id, reason, utcnow())
    typer.echo(f"lifted {_freeze_line(out)}")


@risk_app.command("freezes")
def freezes_command(
    ctx: typer.Context,
    include_lifted: Annotated[bool, typer.Option("--all", help="Lifted freezes too")] = False,
) -> None:
    """List freezes in force (or all), newest first."""
    from clearing.core.db import transaction
    from risk.freezes import list_freezes

    with transaction(database(ctx)) as session:
        found = list_freezes(session, active=not include_lifted)
    for out in found:
        lifted = f" lifted {out.lifted_at.isoformat()}" if out.lifted_at else ""
        typer.echo(f"{out.frozen_at.isoformat()} {_freeze_line(out)}{lifted}")
    if not found:
        typer.echo("no freezes")


def _freeze_line(out: FreezeOut) -> str:
    what = (
        f"member {out.program_code}/{out.external_id}"
        if out.subject == "member"
        else f"program {out.program_code}"
        if out.subject == "program"
        else f"organisation {out.subject_id}"
    )
    amount = f" ({out.points} points)" if out.points is not None else ""
    return f"{out.id} {what}{amount}: {out.reason}"


@risk_app.command("block")
def block_command(
    ctx: typer.Context,
    program: Annotated[str, typer.Argument(help="Program code")],
    member: Annotated[str, typer.Argument(help="The issuer's id of the member")],
    reason: Reason,
) -> None:
    """Put a member id of a program on the blocklist."""
    from clearing.core.db import transaction
    from clearing.core.timeutil import utcnow
    from risk.freezes import block
    from risk.schemas import BlocklistCreate

    req = BlocklistCreate(program=program, external_id=member, reason=reason)
    with transaction(database(ctx)) as session:
        out = block(session, _console(session), req, utcnow())
    typer.echo(f"blocklisted {out.id} {out.program_code}/{out.external_id}: {out.reason}")


@risk_app.command("unblock")
def unblock_command(
    ctx: typer.Context,
    entry_id: Annotated[uuid.UUID, typer.Argument(help="The blocklist entry's id")],
    reason: Reason,
) -> None:
    """Take a member id off the blocklist."""
    from clearing.core.db import transaction
    from clearing.core.timeutil import utcnow
    from risk.freezes import unblock

    with transaction(database(ctx)) as session:
        out = unblock(session, _console(session), entry_id, reason, utcnow())
    typer.echo(f"removed {out.id} {out.program_code}/{out.external_id}: {reason}")


@risk_app.command("blocklist")
def blocklist_command(
    ctx: typer.Context,
    program: Annotated[str | None, typer.Option(help="Only this program")] = None,
    include_removed: Annotated[bool, typer.Option("--all", help="Removed entries too")] = False,
) -> None:
    """List the blocklist (entries in force, or all), newest first."""
    from clearing.core.db import transaction
    from risk.freezes import list_blocklist

    with transaction(database(ctx)) as session:
        found = list_blocklist(session, program=program, active=not include_removed)
    for out in found:
        removed = f" removed {out.removed_at.isoformat()}" if out.removed_at else ""
        typer.echo(
            f"{out.added_at.isoformat()} {out.id} {out.program_code}/{out.external_id}:"
            f" {out.reason}{removed}"
        )
    if not found:
        typer.echo("no blocklist entries")


@risk_app.command("reviews")
def reviews_command(
    ctx: typer.Context,
    include_decided: Annotated[bool, typer.Option("--all", help="Decided reviews too")] = False,
) -> None:
    """List the review queue (pending, or all), oldest first."""
    from clearing.core.db import transaction
    from risk.reviews import list_reviews

    with transaction(database(ctx)) as session:
        found = list_reviews(session, status=None if include_decided else "pending")
    for out in found:
        typer.echo(
            f"{out.requested_at.isoformat()} {out.id} {out.operation} {out.status}"
            f" {out.code or '-'} rule={out.rule_id or '-'} held={out.points_held} {out.reason}"
        )
    if not found:
        typer.echo("no reviews")


@risk_app.command("approve")
def approve_command(
    ctx: typer.Context, review_id: Annotated[uuid.UUID, typer.Argument(help="The review's id")]
) -> None:
    """Approve a reviewed operation: it completes now, once."""
    from clearing.core.db import transaction
    from clearing.core.timeutil import utcnow
    from risk.reviews import approve

    with transaction(database(ctx)) as session:
        review, result = approve(session, _console(session), review_id, utcnow())
    typer.echo(f"approved {review.id} {review.operation}: {result.model_dump_json()}")


@risk_app.command("reject")
def reject_command(
    ctx: typer.Context,
    review_id: Annotated[uuid.UUID, typer.Argument(help="The review's id")],
    reason: Reason,
) -> None:
    """Reject a reviewed operation: its held points are released."""
    from clearing.core.db import transaction
    from clearing.core.timeutil import utcnow
    from risk.reviews import reject

    with transaction(database(ctx)) as session:
        review = reject(session, _console(session), review_id, reason, utcnow())
    typer.echo(f"rejected {review.id} {review.operation}: {reason}")


# settlement risk ---------------------------------------------------------------------------


def _org(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise typer.BadParameter(f"not an organisation id: {text!r}") from None


def _operator(session: Session) -> Caller:
    """The platform acting through its own tools (no key: the command line)."""
    from issuers.organisations import platform

    return Caller(platform(session).id, "platform")


def _first(error: Exception) -> str:
    """The first complaint of a pydantic ValidationError, in one line."""
    errors = getattr(error, "errors", None)
    found = errors()[0] if callable(errors) and errors() else None
    if not found:
        return str(error).splitlines()[0]
    where = ".".join(str(part) for part in found.get("loc", ()))
    message = str(found.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


@risk_app.command("cap")
def cap_command(
    ctx: typer.Context,
    org: Annotated[uuid.UUID, typer.Argument(parser=_org, help="Organisation id")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code")] = "CNY",
    limit: Annotated[int | None, typer.Option(min=0, help="Explicit cap, minor units")] = None,
    collateral: Annotated[
        int | None, typer.Option(min=0, help="Collateral or prefunding, minor units")
    ] = None,
    multiple: Annotated[str | None, typer.Option(help="Cap = collateral x multiple")] = None,
    uncapped: Annotated[bool, typer.Option(help="Remove the cap")] = False,
    reason: Annotated[str, typer.Option(help="Why, for the record")] = "",
) -> None:
    """Set a new version of a party's net debit cap for the open settlement window."""
    from pydantic import ValidationError

    from clearing.core.db import transaction
    from clearing.core.timeutil import utcnow
    from risk.exposure import set_cap
    from risk.schemas import ExposureCapSet

    try:
        req = ExposureCapSet(
            org_id=org,
            currency=currency,
            limit=limit,
            collateral=collateral,
            multiple=None if multiple is None else Decimal(multiple),
            uncapped=uncapped,
            reason=reason,
        )
    except ValidationError as error:
        raise typer.BadParameter(_first(error)) from None
    except ArithmeticError:
        raise typer.BadParameter(f"not a number: {multiple!r}") from None
    with transaction(database(ctx)) as session:
        out = set_cap(session, _operator(session), req, utcnow())
    shown = "uncapped" if out.cap is None else f"cap {out.cap}"
    typer.echo(f"{out.org_id} {out.currency} version {out.version}: {shown}")


@risk_app.command("exposure")
def exposure_command(
    ctx: typer.Context,
    org: Annotated[uuid.UUID, typer.Argument(parser=_org, help="Organisation id")],
) -> None:
    """Show a party's open net debit, cap and headroom per currency."""
    from clearing.core.db import transaction
    from risk.exposure import exposure

    with transaction(database(ctx)) as session:
        out = exposure(session, org)
    for line in out.currencies:
        cap = "uncapped" if line.cap is None else f"cap {line.cap} headroom {line.headroom}"
        typer.echo(f"{line.currency} open net debit {line.open_net_debit} {cap}")
    if not out.currencies:
        typer.echo("no open position, no cap")
    if out.restricted:
        typer.echo(f"restricted: unpaid {', '.join(out.overdue_batches)}")


@risk_app.command("payment")
def payment_command(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Settlement batch id, SB-CCY-YYYYMMDD")],
    org: Annotated[uuid.UUID, typer.Argument(parser=_org, help="Organisation id")],
    received: Annotated[
        bool, typer.Option("--received/--paid", help="The party received (else paid)")
    ] = False,
    reference: Annotated[str, typer.Option(help="The transfer's reference")] = "",
) -> None:
    """Record that a party paid (or received) its net position of a published batch."""
    from pydantic import ValidationError

    from clearing.core.db import transaction
    from clearing.core.timeutil import utcnow
    from risk.exposure import record_payment
    from risk.schemas import SettlementPaymentCreate

    try:
        req = SettlementPaymentCreate(
            batch_id=batch,
            org_id=org,
            direction="received" if received else "paid",
            reference=reference,
        )
    except ValidationError as error:
        raise typer.BadParameter(_first(error)) from None
    with transaction(database(ctx)) as session:
        out = record_payment(session, _operator(session), req, utcnow())
    lifted = ", restriction lifted" if out.lifted_restriction else ""
    typer.echo(f"{out.batch_id} {out.org_id} {out.direction} {out.amount}{lifted}")


@risk_app.command("restrict-overdue")
def restrict_overdue_command(ctx: typer.Context) -> None:
    """Restrict now every party past the payment deadline (what the scheduler does)."""
    from clearing.core.config import Settings
    from clearing.core.timeutil import utcnow
    from risk.tasks import run_overdue

    made = run_overdue(database(ctx), Settings.from_env(), utcnow())
    for r in made:
        typer.echo(f"restricted {r.org_id}: {r.batch_id} unpaid since {r.due_at.isoformat()}")
    if not made:
        typer.echo("nobody overdue")
