"""What tiers cost an accrual on PostgreSQL: a program without tiers against one with three.

    .venv/bin/python benchmarks/tiers_bench.py [--seconds 5]

One process, one connection, one transaction per operation, through the service layer (no risk
policy bound: the figure is the tiers' own cost). Each program has 200 members with 50 earlier
accruals each (the rows qualification sums); nobody reaches a higher tier during the run, which
is the common case: the tiered program pays one statement, the other none. Phases run in the
order plain, tiered, tiered, plain (a drift of the machine weighs on both alike): single
accruals, then bulk files of 1,000 lines. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "CLEARING_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MEMBERS = 200
EARLIER = 50
FILE_LINES = 1000


def _admin() -> Engine:
    return create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


def setup(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Two issuers, PLAIN and TIERED, with members and their earlier accruals."""
    from clearing.app.migrate import upgrade
    from clearing.core.db import make_engine, transaction
    from clearing.web.context import Caller
    from issuers import accruals, members, organisations, programs, tiering
    from issuers.schemas import (
        AccrualBatchCreate,
        AccrualCreate,
        MemberCreate,
        OrganisationCreate,
        ProgramCreate,
        TierCreate,
    )

    now = datetime.now(UTC) - timedelta(days=60)
    engine = make_engine(url)
    upgrade(engine)
    issuers: list[uuid.UUID] = []
    with transaction(engine) as s:
        organisations.create_organisation(
            s, OrganisationCreate(kind="platform", name="Platform", currency="CNY"), now
        )
        for code in ("PLAIN", "TIERED"):
            org = organisations.create_organisation(
                s, OrganisationCreate(kind="issuer", name=code, currency="CNY"), now
            )
            caller = Caller(org.id, "issuer")
            programs.create_program(
                s, caller, ProgramCreate(code=code, name=code, point_value=Decimal("0.005")), now
            )
            for m in range(MEMBERS):
                members.create_member(s, caller, code, MemberCreate(external_id=f"m{m}"), now)
            issuers.append(org.id)
        tiered = Caller(issuers[1], "issuer")
        for req in (
            TierCreate(code="standard", name="Standard", rank=0),
            TierCreate(code="silver", name="Silver", rank=1, qualify_points=10**12),
            TierCreate(code="gold", name="Gold", rank=2, qualify_points=10**13),
        ):
            tiering.create_tier(s, tiered, "TIERED", req, now)
    for issuer, code in zip(issuers, ("PLAIN", "TIERED"), strict=True):
        with transaction(engine) as s:
            items = [
                AccrualCreate(program=code, external_id=f"m{m}", points=100)
                for m in range(MEMBERS)
                for _ in range(EARLIER)
            ]
            accruals.accrue_batch(
                s,
                Caller(issuer, "issuer"),
                AccrualBatchCreate(items=items),
                now + timedelta(days=30),
                uuid.uuid4().hex,
            )
    engine.dispose()
    return issuers[0], issuers[1]


def run(engine: Engine, issuer: uuid.UUID, code: str, seconds: float, batch: bool) -> float:
    """Operations (single accruals, or file lines) per second for `seconds`."""
    from clearing.core.db import transaction
    from clearing.web.context import Caller
    from issuers import accruals
    from issuers.schemas import AccrualBatchCreate, AccrualCreate

    caller = Caller(issuer, "issuer")
    done, n = 0, 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        with transaction(engine) as s:
            if batch:
                items = [
                    AccrualCreate(program=code, external_id=f"m{(n + i) % MEMBERS}", points=5)
                    for i in range(FILE_LINES)
                ]
                accruals.accrue_batch(
                    s, caller, AccrualBatchCreate(items=items), datetime.now(UTC), uuid.uuid4().hex
                )
                done += FILE_LINES
            else:
                accruals.accrue(
                    s,
                    caller,
                    AccrualCreate(program=code, external_id=f"m{n % MEMBERS}", points=5),
                    datetime.now(UTC),
                    uuid.uuid4().hex,
                )
                done += 1
        n += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    """Set up, measure both programs both ways, print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    from clearing.core.db import make_engine

    name = f"tiers_bench_{uuid.uuid4().hex[:8]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        plain, tiered = setup(url)
        engine = make_engine(url, pool_size=1, max_overflow=0)
        figures: dict[str, list[float]] = {}
        for batch in (False, True):
            kind = "file_lines" if batch else "single"
            order: list[tuple[str, uuid.UUID]] = [
                ("PLAIN", plain),
                ("TIERED", tiered),
                ("TIERED", tiered),
                ("PLAIN", plain),
            ]
            for code, issuer in order:
                figures.setdefault(f"{kind}_{code.lower()}", []).append(
                    run(engine, issuer, code, args.seconds, batch)
                )
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    result = {key: round(sum(v) / len(v), 1) for key, v in figures.items()}
    result["single_ratio"] = round(result["single_tiered"] / result["single_plain"], 3)
    result["file_ratio"] = round(result["file_lines_tiered"] / result["file_lines_plain"], 3)
    for key, value in result.items():
        print(f"{key:>20} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
