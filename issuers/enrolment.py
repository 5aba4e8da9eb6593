"""Enrolment at scale: a file of members, all or none, set-based (COPY on PostgreSQL, executemany
on SQLite), writing the same rows as `members.create_member` one by one (a test compares them);
and enrolment on a member's first accrual for programs that ask for it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, cast

import psycopg
from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clearing.core.db import bulk_insert, is_postgres
from clearing.core.errors import Conflict, InvalidInput
from clearing.core.idempotency import Operation, Outcome, run_once
from clearing.core.ids import new_id
from clearing.core.ledger import MEMBER, account_name, points_asset
from clearing.core.models import Account, Balance
from clearing.web.context import Caller
from issuers import repository
from issuers.models import Member, Program
from issuers.programs import own_program
from issuers.repository import MemberRef, ProgramRef
from issuers.schemas import MemberBatchCreate, MemberBatchOut

_ACCOUNTS = cast(Table, Account.__table__)
_BALANCES = cast(Table, Balance.__table__)
_MEMBERS = cast(Table, Member.__table__)
CHUNK = 20_000
"""Members written per round of COPY: memory stays flat however long the file."""
_KEY_DETAIL = re.compile(r"\(program_id, external_id\)=\([^,]+, (.+)\) already exists")


class MembersExist(Conflict):
    code = "members_exist"
    title = "Some members already exist"


def enrol_batch(
    session: Session,
    caller: Caller,
    code: str,
    req: MemberBatchCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[MemberBatchOut]:
    """Enrol a list of members of the caller's program in one transaction: all or none."""
    operation = Operation(
        "member_batch",
        {"program": code, **req.model_dump(mode="json")},
        MemberBatchOut,
        lambda _: _enrol_listed(session, caller, code, [m.external_id for m in req.items], now),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def _enrol_listed(
    session: Session, caller: Caller, code: str, external_ids: Sequence[str], now: datetime
) -> MemberBatchOut:
    seen: set[str] = set()
    for external_id in external_ids:
        if external_id in seen:
            raise InvalidInput(f"member {external_id} is listed twice", field="items")
        seen.add(external_id)
    program = own_program(session, caller, code)
    return MemberBatchOut(program=code, enrolled=enrol_many(session, program, external_ids, now))


def enrol_file(
    session: Session,
    caller: Caller,
    code: str,
    external_ids: Iterable[str],
    digest: str,
    now: datetime,
) -> Outcome[MemberBatchOut]:
    """Enrol the members of a file (streamed), once per file: its SHA-256 `digest` is the
    idempotency key, so running the same file again answers as the first run did."""
    operation = Operation(
        "member_file",
        {"program": code, "sha256": digest},
        MemberBatchOut,
        lambda _: MemberBatchOut(
            program=code,
            enrolled=enrol_many(session, own_program(session, caller, code), external_ids, now),
        ),
    )
    return run_once(session, caller.org_id, f"members-file:{digest}", operation, now)


def enrol_many(
    session: Session, program: Program | ProgramRef, external_ids: Iterable[str], now: datetime
) -> int:
    """Write members, their accounts and balance rows, set-based, a chunk at a time in the
    caller's transaction; an external id already enrolled (or listed twice) refuses them all."""
    count = 0
    ids = iter(external_ids)
    postgres = is_postgres(session)
    while chunk := list(islice(ids, CHUNK)):
        try:
            if postgres:
                _copy_members(session, program, chunk, now)
            else:
                accounts, balances, members = member_rows(program, chunk, now)
                bulk_insert(session, _ACCOUNTS, accounts)
                bulk_insert(session, _BALANCES, balances)
                bulk_insert(session, _MEMBERS, members)
        except (IntegrityError, psycopg.IntegrityError) as error:
            raise _exists(error) from None
        count += len(chunk)
    return count


def _copy_members(
    session: Session, program: Program | ProgramRef, external_ids: Sequence[str], now: datetime
) -> None:
    """`member_rows` as COPY text, written straight: the rows are fixed in shape and every value
    is an id, a code or an external id whose characters need no escaping (their patterns)."""
    asset = points_asset(program.code)
    pairs = [(new_id(), new_id()) for _ in external_ids]
    at = now.isoformat()
    accounts = "".join(
        f"{a}\t{account_name(asset, MEMBER, m)}\t{asset}\t{MEMBER}\t{program.issuer_id}\t1\tt\t{at}\n"
        for m, a in pairs
    )
    balances = "".join(f"{a}\t0\t0\t0\tt\n" for _, a in pairs)
    members = "".join(
        f"{m}\t{program.id}\t{e}\tactive\t{a}\t{at}\n"
        for (m, a), e in zip(pairs, external_ids, strict=True)
    )
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    for table, columns, text in (
        ("accounts", "id, name, asset, kind, org_id, slots, floor_zero, created_at", accounts),
        ("balances", "account_id, slot, balance, held, floor_zero", balances),
        ("members", "id, program_id, external_id, status, account_id, created_at", members),
    ):
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            copy.write(text)


def member_rows(
    program: Program | ProgramRef, external_ids: Sequence[str], now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Accounts, balance rows and members as `create_member` writes them, ids made in its order
    (member, then account)."""
    asset = points_asset(program.code)
    accounts: list[dict[str, Any]] = []
    balances: list[dict[str, Any]] = []
    members: list[dict[str, Any]] = []
    for external_id in external_ids:
        member_id, account_id = new_id(), new_id()
        accounts.append(
            {
                "id": account_id,
                "name": account_name(asset, MEMBER, member_id),
                "asset": asset,
                "kind": MEMBER,
                "org_id": program.issuer_id,
                "slots": 1,
                "floor_zero": True,
                "created_at": now,
            }
        )
        balances.append(
            {"account_id": account_id, "slot": 0, "balance": 0, "held": 0, "floor_zero": True}
        )
        members.append(
            {
                "id": member_id,
                "program_id": program.id,
                "external_id": external_id,
                "status": "active",
                "account_id": account_id,
                "created_at": now,
            }
        )
    return accounts, balances, members


def _exists(error: Exception) -> MembersExist:
    """The refusal of a file with a member already enrolled, naming it where the database does."""
    orig = getattr(error, "orig", error)
    detail = orig.diag.message_detail if isinstance(orig, psycopg.Error) else None
    found = _KEY_DETAIL.search(detail or "")
    if found:
        return MembersExist(
            f"member {found.group(1)} already exists or is listed twice; nothing was enrolled",
            external_id=found.group(1),
        )
    return MembersExist("a member already exists or is listed twice; nothing was enrolled")


_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=~-]{0,99}$")
"""`clearing.core.schemas.ExternalId`, for ids read from a file rather than from JSON."""


def read_ids(lines: Iterable[str]) -> Iterator[str]:
    """External ids from a CSV file's lines: the first column, a header `external_id` skipped;
    an id the API would refuse stops the file (and so the whole enrolment)."""
    for n, line in enumerate(lines, start=1):
        value = line.split(",", 1)[0].strip().strip('"')
        if not value or (n == 1 and value == "external_id"):
            continue
        if not _EXTERNAL_ID.match(value):
            raise InvalidInput(f"line {n}: not a member id: {value[:40]!r}", field="external_id")
        yield value


def enrol_on_accrual(
    session: Session, program: ProgramRef, external_ids: Sequence[str], now: datetime
) -> dict[str, MemberRef]:
    """Enrol members an accrual names for the first time, in its transaction (programs with
    `enrol_on_accrual`); their refs by external id.

    Two first accruals of one new member may race: the loser's insert meets the winner's
    committed member, and its savepoint rolls back to read that member instead of failing."""
    try:
        with session.begin_nested():
            accounts, balances, members = member_rows(program, external_ids, now)
            bulk_insert(session, _ACCOUNTS, accounts)
            bulk_insert(session, _BALANCES, balances)
            bulk_insert(session, _MEMBERS, members)
    except (IntegrityError, psycopg.IntegrityError):
        known = {
            m.external_id: m
            for m in repository.members_by_external_ids(session, program.id, external_ids)
        }
        missing = [e for e in external_ids if e not in known]
        if len(missing) == len(external_ids):
            raise  # not a member enrolled meanwhile: a fault to see
        return {**known, **(enrol_on_accrual(session, program, missing, now) if missing else {})}
    return {
        m["external_id"]: MemberRef(
            cast(uuid.UUID, m["id"]), program.id, m["external_id"], "active", m["account_id"]
        )
        for m in members
    }


def enrol_unknown(
    session: Session, program: ProgramRef, external_ids: Iterable[str], now: datetime
) -> None:
    """Enrol those of `external_ids` the program does not know yet (an accrual file of a program
    with `enrol_on_accrual`)."""
    wanted = set(external_ids)
    known = {m.external_id for m in repository.members_by_external_ids(session, program.id, wanted)}
    missing = sorted(wanted - known)
    if missing:
        enrol_on_accrual(session, program, missing, now)
