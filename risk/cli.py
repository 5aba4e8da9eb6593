"""`clearing risk ...`: the operator's risk controls from the command line."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Annotated

import typer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from clearing.web.context import Caller

risk_app = typer.Typer(
    help="Risk controls: limits, decisions, the anomaly scan.", no_args_is_help=True
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
