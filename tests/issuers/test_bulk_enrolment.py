"""Bulk enrolment writes the rows `create_member` writes one by one (twin databases compared),
all or none, once per idempotency key or file; programs may enrol on a member's first accrual."""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.db import make_engine, transaction
from clearing.core.errors import InvalidInput, NotFound
from clearing.core.models import Account, Balance
from issuers import accruals, expiring, members
from issuers.enrolment import MembersExist, enrol_batch, enrol_file, read_ids
from issuers.models import Member
from issuers.schemas import (
    AccrualBatchCreate,
    AccrualCreate,
    MemberBatchCreate,
    MemberCreate,
    ProgramExpirySet,
)
from tests.factories import T0, accrue, balance, build_world, key

IDS = [f"card-{n:04d}" for n in range(37)]  # past the COPY threshold on PostgreSQL


@pytest.fixture(params=["sqlite", "postgresql"])
def twins(
    request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path
) -> Iterator[tuple[Engine, Engine]]:
    """Two fresh databases of one kind."""
    if request.param == "sqlite":
        urls = []
        for name in ("one", "two"):
            shutil.copyfile(sqlite_template, tmp_path / f"{name}.db")
            urls.append(f"sqlite:///{tmp_path / name}.db")
    else:
        fresh: Callable[[], str] = request.getfixturevalue("pg_databases")
        urls = [fresh(), fresh()]
    one, two = make_engine(urls[0]), make_engine(urls[1])
    yield one, two
    one.dispose()
    two.dispose()


UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _rows(engine: Engine) -> dict[str, Any]:
    """Accounts, balance rows and members, every column; each id, as a column or inside a name,
    replaced by its rank among the ids of its database (both twins make them in one order)."""
    with engine.connect() as c:
        tables: dict[str, list[tuple[Any, ...]]] = {
            "accounts": [tuple(r) for r in c.execute(select(Account))],
            "balances": [tuple(r) for r in c.execute(select(Balance))],
            "members": [tuple(r) for r in c.execute(select(Member))],
        }
    ids: set[uuid.UUID] = set()
    for rows in tables.values():
        for row in rows:
            for value in row:
                if isinstance(value, uuid.UUID):
                    ids.add(value)
                elif isinstance(value, str):
                    ids.update(uuid.UUID(found) for found in UUID_TEXT.findall(value))
    rank = {found: f"<{n}>" for n, found in enumerate(sorted(ids))}

    def plain(value: object) -> object:
        if isinstance(value, uuid.UUID):
            return rank[value]
        if isinstance(value, str):
            return UUID_TEXT.sub(lambda m: rank[uuid.UUID(m.group())], value)
        return value

    return {
        name: sorted((tuple(plain(v) for v in row) for row in table), key=repr)
        for name, table in tables.items()
    }


def test_a_batch_writes_the_rows_of_one_by_one_enrolment(twins: tuple[Engine, Engine]) -> None:
    one_by_one, batch = twins
    for engine in twins:
        build_world(engine)
    with transaction(one_by_one) as session:
        caller = _issuer(session, "BANKA")
        for external_id in IDS:
            members.create_member(
                session, caller, "BANKA", MemberCreate(external_id=external_id), T0
            )
    with transaction(batch) as session:
        caller = _issuer(session, "BANKA")
        request = MemberBatchCreate(items=[MemberCreate(external_id=e) for e in IDS])
        out, replayed = enrol_batch(session, caller, "BANKA", request, T0, "k-1")
    assert (out.enrolled, replayed) == (37, False)
    assert _rows(batch) == _rows(one_by_one)
    # Enrolled members earn and show up like any other.
    with transaction(batch) as session:
        caller = _issuer(session, "BANKA")
    accrue(batch, caller, "BANKA", "card-0036", 50)
    assert balance(batch, caller, "BANKA", "card-0036") == (50, 50)


def _issuer(session: Any, code: str) -> Any:
    from clearing.core.kinds import OrgKind
    from clearing.web.context import Caller
    from issuers.repository import program_by_code

    program = program_by_code(session, code)
    assert program is not None
    return Caller(program.issuer_id, OrgKind.ISSUER)


def _count(engine: Engine) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(Member)).scalar_one())


def test_a_batch_is_all_or_none_and_runs_once_per_key(engine: Engine) -> None:
    w = build_world(engine)
    request = MemberBatchCreate(items=[MemberCreate(external_id=e) for e in IDS[:5]])
    with transaction(engine) as session:
        enrol_batch(session, w.bank_a, "BANKA", request, T0, "k-1")
    with transaction(engine) as session:
        out, replayed = enrol_batch(session, w.bank_a, "BANKA", request, T0, "k-1")
    assert (out.enrolled, replayed) == (5, True)
    assert _count(engine) == 5
    # A new file with one id already enrolled enrols none of its members.
    clash = MemberBatchCreate(items=[MemberCreate(external_id=e) for e in IDS[3:20]])
    with pytest.raises(MembersExist) as refused, transaction(engine) as session:
        enrol_batch(session, w.bank_a, "BANKA", clash, T0, key())
    assert _count(engine) == 5
    if engine.dialect.name == "postgresql":
        assert refused.value.extra["external_id"] == "card-0003"
    twice = MemberBatchCreate(items=[MemberCreate(external_id="x"), MemberCreate(external_id="x")])
    with pytest.raises(InvalidInput, match="listed twice"), transaction(engine) as session:
        enrol_batch(session, w.bank_a, "BANKA", twice, T0, key())
    # Another issuer's program does not exist for the caller.
    with pytest.raises(NotFound), transaction(engine) as session:
        enrol_batch(session, w.bank_b, "BANKA", request, T0, key())
    assert _count(engine) == 5


def test_a_file_enrols_once_per_content(engine: Engine, tmp_path: Path) -> None:
    w = build_world(engine)
    path = tmp_path / "members.csv"
    path.write_text("external_id\n" + "\n".join(f"{e},extra" for e in IDS) + "\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for replay in (False, True):
        with transaction(engine) as session, path.open() as lines:
            out, replayed = enrol_file(session, w.bank_a, "BANKA", read_ids(lines), digest, T0)
        assert (out.enrolled, replayed) == (37, replay)
    assert _count(engine) == 37
    with pytest.raises(InvalidInput, match="line 2"):
        list(read_ids(["external_id", "bad id"]))


def test_a_program_may_enrol_members_on_their_first_accrual(engine: Engine) -> None:
    w = build_world(engine)
    with pytest.raises(NotFound):
        accrue(engine, w.bank_a, "BANKA", "newcomer", 10)
    with transaction(engine) as session:
        expiring.set_expiry_policy(
            session,
            w.bank_a,
            "BANKA",
            ProgramExpirySet(expiry_policy="rolling", expiry_months=12, enrol_on_accrual=True),
        )
    accrue(engine, w.bank_a, "BANKA", "newcomer", 10)
    assert balance(engine, w.bank_a, "BANKA", "newcomer") == (10, 10)
    items = [
        AccrualCreate(program="BANKA", external_id=e, points=n)
        for e, n in (("newcomer", 5), ("file-1", 7), ("file-2", 9), ("file-1", 1))
    ]
    with transaction(engine) as session:
        accruals.accrue_batch(session, w.bank_a, AccrualBatchCreate(items=items), T0, key())
    assert balance(engine, w.bank_a, "BANKA", "file-1") == (8, 8)
    assert balance(engine, w.bank_a, "BANKA", "newcomer") == (15, 15)
    assert _count(engine) == 3
    # Other programs still refuse unknown members.
    with pytest.raises(NotFound):
        accrue(engine, w.bank_b, "BANKB", "newcomer", 10)


def test_two_first_accruals_of_one_new_member_both_post(pg_engine: Engine) -> None:
    # Real connections: the second accrual reads no member, then meets the first's insert; once
    # the first commits, it reads that member instead of failing, and both accruals count.
    w = build_world(pg_engine)
    with transaction(pg_engine) as session:
        expiring.set_expiry_policy(
            session,
            w.bank_a,
            "BANKA",
            ProgramExpirySet(expiry_policy="rolling", expiry_months=12, enrol_on_accrual=True),
        )
    enrolled = threading.Event()
    failures: list[BaseException] = []

    def first() -> None:
        try:
            with transaction(pg_engine) as session:
                item = AccrualCreate(program="BANKA", external_id="racer", points=10)
                accruals.accrue(session, w.bank_a, item, T0, key())
                enrolled.set()
                time.sleep(1.0)  # the second accrual is waiting on this member's insert
        except BaseException as error:  # reported below, in the test thread
            failures.append(error)
            enrolled.set()

    racer = threading.Thread(target=first)
    racer.start()
    assert enrolled.wait(30)
    accrue(pg_engine, w.bank_a, "BANKA", "racer", 5)
    racer.join(30)
    assert failures == []
    assert balance(pg_engine, w.bank_a, "BANKA", "racer") == (15, 15)
    with transaction(pg_engine) as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Member).where(Member.external_id == "racer")
            )
            == 1
        )
