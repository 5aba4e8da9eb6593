"""`clearing programs|members|tiers ...`: programs from the command line (the operator acts for
the program's issuer): points expiring soon, expiry notices, bulk enrolment, tiers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from clearing.core.errors import NotFound
from clearing.web.context import Caller

programs_app = typer.Typer(
    help="Issuers' programs: points expiring soon, expiry notices.", no_args_is_help=True
)
members_app = typer.Typer(
    help="Members of issuers' programs: bulk enrolment.", no_args_is_help=True
)


def database(ctx: typer.Context) -> Engine:
    """The configured database, opened (schema checked) by the command line that mounts this."""
    open_database: Callable[[], Engine] = ctx.obj
    if not callable(open_database):
        raise RuntimeError("these commands run under `clearing`, which opens the database")
    return open_database()


def issuer_of(engine: Engine, code: str) -> Caller:
    """The program's issuer, as whom the operator acts."""
    from clearing.core.db import transaction
    from clearing.core.kinds import OrgKind
    from issuers.repository import program_by_code

    with transaction(engine) as session:
        program = program_by_code(session, code)
        if program is None:
            raise NotFound(f"unknown program {code}")
        return Caller(program.issuer_id, OrgKind.ISSUER)


@programs_app.command("expiring")
def expiring_command(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Program code")],
    days: Annotated[int, typer.Option(min=1, max=3660, help="Window in days from now")] = 90,
    member: Annotated[str | None, typer.Option(help="One member's external id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Members listed")] = 50,
) -> None:
    """Points expiring within DAYS: the program's totals and members, or one member's lots."""
    from clearing.core.db import transaction
    from clearing.core.timeutil import utcnow
    from issuers import expiring

    engine = database(ctx)
    caller = issuer_of(engine, code)
    with transaction(engine) as session:
        if member is not None:
            mine = expiring.member_expiring(session, caller, code, member, utcnow(), days)
            typer.echo(f"{code} {member}: {mine.points} points expire within {days} days")
            for lot in mine.lots:
                typer.echo(f"{lot.expires_at.isoformat()} {lot.points}")
            return
        found = expiring.program_expiring(session, caller, code, utcnow(), days, None, limit)
    typer.echo(
        f"{code}: {found.points} points of {found.members} members expire within {days} days"
    )
    for item in found.items:
        typer.echo(f"{item.external_id} {item.points} from {item.first_expires_at.isoformat()}")


@programs_app.command("notices")
def notices_command(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Program code")],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many, oldest first")] = 100,
) -> None:
    """The expiry notices the daily job recorded for a program."""
    from clearing.core.db import transaction
    from issuers import expiring

    engine = database(ctx)
    caller = issuer_of(engine, code)
    with transaction(engine) as session:
        found = expiring.list_notices(session, caller, code, None, limit)
    for n in found:
        typer.echo(
            f"{n.created_at.isoformat()} {n.external_id} {n.points} points expire on"
            f" {n.expires_on.isoformat()} (from {n.expires_at.isoformat()})"
        )
    if not found:
        typer.echo("no notices")


@programs_app.command("record-notices")
def record_notices_command(ctx: typer.Context) -> None:
    """Record today's expiry notices now (what the daily job does); safe to run twice."""
    from clearing.core.timeutil import utcnow
    from issuers.tasks import run_notices

    typer.echo(f"recorded {run_notices(database(ctx), utcnow())} expiry notices")


@members_app.command("enrol")
def enrol_command(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="CSV: one external id per line (first column)")],
    program: Annotated[str, typer.Option("--program", help="Program code")],
) -> None:
    """Enrol the members of a file, set-based, all or none. The same file twice enrols once (the
    file's SHA-256 is the idempotency key); an id already enrolled refuses the whole file."""
    from clearing.core.db import transaction
    from clearing.core.timeutil import utcnow
    from issuers.enrolment import enrol_file, read_ids

    engine = database(ctx)
    caller = issuer_of(engine, program)
    digest = hashlib.sha256()
    with path.open("rb") as raw:
        for block in iter(lambda: raw.read(1 << 20), b""):
            digest.update(block)
    with transaction(engine) as session, path.open(encoding="utf-8") as lines:
        out, replayed = enrol_file(
            session, caller, program, read_ids(lines), digest.hexdigest(), utcnow()
        )
    if replayed:
        typer.echo(
            f"{program}: this file was enrolled before ({out.enrolled} members); nothing new"
        )
    else:
        typer.echo(f"{program}: enrolled {out.enrolled} members")


tiers_app = typer.Typer(help="Programs' tiers: list them, run the anniversary review.")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {text!r}") from None


@tiers_app.command("list")
def list_command(ctx: typer.Context, program: Annotated[str, typer.Argument()]) -> None:
    """List a program's tiers, base first."""
    from clearing.core.db import transaction
    from issuers.tiering import list_tiers

    with transaction(database(ctx)) as session:
        tiers = list_tiers(session, None, program)
    for t in tiers:
        typer.echo(
            f"{t.rank} {t.code} x{t.multiplier} points>={t.qualify_points or '-'}"
            f" spend>={t.qualify_spend or '-'} v{t.version} [{', '.join(t.privileges)}]"
        )
    if not tiers:
        typer.echo(f"program {program} has no tiers")


@tiers_app.command("review")
def review_command(
    ctx: typer.Context,
    day: Annotated[
        date | None,
        typer.Option("--date", help="Anniversary day, YYYY-MM-DD (default: today)", parser=_date),
    ] = None,
    program: Annotated[
        list[str] | None, typer.Option("--program", help="Only this program")
    ] = None,
) -> None:
    """Re-qualify the members whose anniversary is the day (as of now): down or up."""
    from clearing.core.timeutil import utcnow
    from issuers.tasks import run_review

    done = run_review(database(ctx), utcnow(), day, program)
    for code, reviewed in done.reviewed.items():
        typer.echo(
            f"{code} {done.days[code]}: {reviewed} reviewed,"
            f" {done.upgraded[code]} upgraded, {done.downgraded[code]} downgraded"
        )
    if not done.reviewed:
        typer.echo("no tiered programs")
