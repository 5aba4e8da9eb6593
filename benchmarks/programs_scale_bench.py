"""A bank's size on PostgreSQL: bulk enrolment from a file, then a year-end style clear-down of
every member's due lots by the set-based expiry, against a plain UPDATE of the same lots.

    .venv/bin/python benchmarks/programs_scale_bench.py [--members 1000000] [--chunk 10000]

Creates (and drops) a database of its own on the server of CLEARING_BENCH_DATABASE_URL
(default postgresql://postgres@127.0.0.1:5432). Steps, each timed:
1. enrolment: a CSV of N external ids, enrolled through `issuers.enrolment.enrol_file` (the
   `clearing members enrol` path: COPY in chunks, one transaction, all or none);
2. set-up: one opening lot per member, due a year on, written set-based in SQL (`opening_lots`:
   entries of 64 members from the program's issued account, postings, lots, balances; the
   ordinary bulk accrual path runs near 1,000 lines/s here, which would make set-up the run);
3. reference: a copy of the lots table with the same indexes, and one plain
   `UPDATE ... SET remaining = 0` of its due lots, in one transaction;
4. expiry: `clearing.core.tasks.run_expiry` as of a year on, set-based, a chunk of member
   accounts per transaction.
Prints members per second for enrolment and expiry, the expiry / UPDATE time ratio, and the
peak RSS after each step (flat: every step streams and chunks); one JSON line last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from clearing.app.migrate import upgrade
from clearing.core.db import make_engine, transaction
from clearing.core.tasks import run_expiry
from clearing.web.context import Caller
from issuers import organisations, programs
from issuers.enrolment import enrol_file, read_ids
from issuers.schemas import OrganisationCreate, ProgramCreate

ADMIN_URL = os.environ.get("CLEARING_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
EARNED = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
EXPIRES = datetime(2027, 1, 15, 2, 0, tzinfo=UTC)
RUN = datetime(2027, 1, 16, 0, 0, tzinfo=UTC)
"""A year and a day after the accruals: every lot (rolling 12 months) is due."""
POINTS = 100


def _admin_exec(sql: str) -> None:
    admin = create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database="postgres"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(sql))
    admin.dispose()


def _rss_mib() -> float:
    """Peak resident set size of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ids(n: int) -> Iterator[str]:
    return (f"m{i:09d}" for i in range(n))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


ENTRY = 64
"""Members per opening entry (as the set-based expiry groups them)."""


def opening_lots(conn: Connection, org_id: uuid.UUID, n: int) -> None:
    """One lot of POINTS per member, set-based in SQL: entries of ENTRY members crediting them
    from the program's issued account, postings, lots and balances as an accrual file leaves
    them (without accrual records, which expiry never reads); the books still balance."""
    asset = "points:BIG"
    params = {"org": org_id, "earned": EARNED, "expires": EXPIRES, "points": POINTS, "asset": asset}
    for sql in (
        "CREATE TEMP TABLE bench_members AS SELECT account_id,"
        " (row_number() OVER (ORDER BY account_id) - 1) AS n FROM members",
        f"CREATE TEMP TABLE bench_entries AS SELECT n / {ENTRY} AS g, gen_random_uuid() AS id,"
        " count(*) AS members FROM bench_members GROUP BY 1",
        "INSERT INTO journal_entries (id, kind, org_id, booked_at, memo)"
        " SELECT id, 'accrual', :org, :earned, CAST('{}' AS json) FROM bench_entries",
        "INSERT INTO postings (entry_id, leg, account_id, asset, amount)"
        f" SELECT e.id, m.n % {ENTRY}, m.account_id, :asset, :points"
        f" FROM bench_members m JOIN bench_entries e ON e.g = m.n / {ENTRY}",
        "INSERT INTO postings (entry_id, leg, account_id, asset, amount)"
        " SELECT e.id, e.members, a.id, :asset, -:points * e.members FROM bench_entries e"
        " JOIN accounts a ON a.asset = :asset AND a.kind = 'issued'",
        "INSERT INTO lots (id, account_id, entry_id, source, funding_org_id, earned_at,"
        " expires_at, points, remaining)"
        " SELECT gen_random_uuid(), m.account_id, e.id, 'accrual', :org, :earned, :expires,"
        " :points, :points"
        f" FROM bench_members m JOIN bench_entries e ON e.g = m.n / {ENTRY}",
        "UPDATE balances b SET balance = :points FROM bench_members m"
        " WHERE b.account_id = m.account_id AND b.slot = 0",
        "UPDATE balances SET balance = balance - :points * (SELECT count(*) FROM bench_members)"
        " WHERE slot = 0 AND account_id = (SELECT id FROM accounts WHERE asset = :asset"
        " AND kind = 'issued')",
        "DROP TABLE bench_members",
        "DROP TABLE bench_entries",
        "ANALYZE",
    ):
        conn.execute(text(sql), params)
    del n


def main() -> int:
    """Run the benchmark; print the figures and one JSON line last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument(
        "--chunk", type=int, default=10_000, help="member accounts per expiry chunk"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database (to explain)")
    args = parser.parse_args()
    n: int = args.members
    name = f"clearing_scale_bench_{os.getpid()}"
    _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin_exec(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    figures: dict[str, float | int] = {"members": n}
    try:
        upgrade(engine)
        with transaction(engine) as session:
            org = organisations.create_organisation(
                session, OrganisationCreate(kind="issuer", name="Big Bank", currency="CNY"), EARNED
            )
            issuer = Caller(org.id, org.kind)
            programs.create_program(
                session,
                issuer,
                ProgramCreate(
                    code="BIG", name="Big", point_value=Decimal("0.01"), expiry_months=12
                ),
                EARNED,
            )
        rss_start = _rss_mib()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "members.csv"
            with path.open("w") as out:
                out.write("external_id\n")
                for external_id in _ids(n):
                    out.write(external_id + "\n")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            started = time.perf_counter()
            with transaction(engine) as session, path.open() as lines:
                enrolled, _ = enrol_file(session, issuer, "BIG", read_ids(lines), digest, EARNED)
            enrol_s = time.perf_counter() - started
        assert enrolled.enrolled == n
        rss_enrolled = _rss_mib()
        _log(f"enrolled {n} members in {enrol_s:.1f} s ({n / enrol_s:,.0f}/s)")

        started = time.perf_counter()
        with engine.begin() as conn:
            opening_lots(conn, org.id, n)
        accrue_s = time.perf_counter() - started
        rss_accrued = _rss_mib()
        _log(f"opening lots for {n} members in {accrue_s:.1f} s ({n / accrue_s:,.0f}/s)")

        with engine.begin() as conn:
            conn.execute(text("ANALYZE lots"))
            conn.execute(text("CREATE TABLE lots_reference AS SELECT * FROM lots"))
            conn.execute(text("ALTER TABLE lots_reference ADD PRIMARY KEY (id)"))
            conn.execute(text("CREATE INDEX ON lots_reference (account_id, expires_at)"))
            conn.execute(text("CREATE INDEX ON lots_reference (expires_at)"))
            conn.execute(text("ANALYZE lots_reference"))
        started = time.perf_counter()
        with engine.begin() as conn:
            updated = conn.execute(
                text(
                    "UPDATE lots_reference SET remaining = 0"
                    " WHERE expires_at <= :run AND remaining > 0"
                ),
                {"run": RUN},
            ).rowcount
        update_s = time.perf_counter() - started
        assert updated == n
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE lots_reference"))
        _log(f"plain UPDATE of {updated} lots in {update_s:.2f} s")

        done = 0
        started = time.perf_counter()

        def progress(chunk: object) -> None:
            nonlocal done
            done += getattr(chunk, "accounts", 0)
            if done % (20 * args.chunk) < args.chunk:
                _log(f"  expiry: {done} of {n} member accounts")

        _, points = run_expiry(engine, RUN, chunk=args.chunk, progress=progress)
        expiry_s = time.perf_counter() - started
        assert points == n * POINTS, points
        rss_expired = _rss_mib()
        _log(f"expired {n} members' lots in {expiry_s:.1f} s ({n / expiry_s:,.0f}/s)")
        with engine.connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM lots WHERE remaining > 0")).scalar_one()
        assert left == 0
        figures |= {
            "enrol_seconds": round(enrol_s, 2),
            "enrol_members_per_s": round(n / enrol_s),
            "opening_lots_seconds": round(accrue_s, 2),
            "update_seconds": round(update_s, 3),
            "expiry_seconds": round(expiry_s, 2),
            "expiry_members_per_s": round(n / expiry_s),
            "expiry_vs_update": round(expiry_s / update_s, 2),
            "rss_mib_start": round(rss_start, 1),
            "rss_mib_enrolled": round(rss_enrolled, 1),
            "rss_mib_accrued": round(rss_accrued, 1),
            "rss_mib_peak": round(rss_expired, 1),
            "chunk": args.chunk,
        }
    finally:
        engine.dispose()
        if not args.keep:
            _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"enrolment: {figures['enrol_members_per_s']:,} members/s (target 20,000)")
    print(
        f"expiry: {figures['expiry_members_per_s']:,} members/s,"
        f" {figures['expiry_vs_update']}x a plain UPDATE (target 10x)"
    )
    print(f"peak RSS: {figures['rss_mib_peak']} MiB")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
