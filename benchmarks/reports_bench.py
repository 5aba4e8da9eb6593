"""The points liability report over a year of a large program, against a plain GROUP BY of the
same postings in the same run, on PostgreSQL.

    .venv/bin/python benchmarks/reports_bench.py [--members 1000000] [--postings 20000000]

Creates a scratch database on the server of CLEARING_BENCH_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/test), migrated as the platform's, with one issuer and its
program BIG made through the services (its system accounts and point value as usual), then
writes set-based in SQL (generate_series, in the ledger's own tables, foreign-key and zero-sum
triggers off while loading only) `--members` member accounts and `--postings` postings over
2026 in Asia/Shanghai: entries of two legs, a member's and a system account's, booked evenly
over the year with time-ordered (version 7) ids as the ledger makes them; six in ten accruals,
two checkout captures, one expiry, one adjustment. Member balances are then set from the
postings (what the ledger keeps), and everything is analysed.

Timed, each the best of `--repeat` runs (default 2), in this order:
- reference: `SELECT account_id, sum(amount) FROM postings GROUP BY account_id` (every
  account's balance from its postings) and `SELECT asset, sum(amount), count(*) FROM postings
  GROUP BY asset` (the cheapest GROUP BY over all of them);
- ours: `reports.liability.liability` for 2026-01-01 .. 2026-12-31, 365 daily rows, run
  exactly as the API runs it (a session on the engine).
Checks the report's last closing against the sum of the member balances. Prints a table, then
one JSON line with every figure: seconds, the ratios, and this process's peak RSS. `--db NAME`
keeps (and later reuses) the loaded database.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from ledger_bench import ADMIN_URL, _admin, _create_db, _drop_db
from sqlalchemy import text
from sqlalchemy.engine import make_url

from clearing.app.migrate import upgrade
from clearing.core.db import make_engine, transaction
from clearing.web.context import Caller
from issuers import organisations, programs
from issuers.schemas import OrganisationCreate, ProgramCreate
from reports.ledger_repository import member_balances
from reports.liability import liability
from reports.query import ReportQuery

YEAR_START = datetime(2025, 12, 31, 16, 0, tzinfo=UTC)  # 2026-01-01 00:00 Asia/Shanghai
YEAR_END = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
CREATED = datetime(2025, 12, 1, tzinfo=UTC)
ASSET = "points:BIG"

# Entry n: kind by n % 10, member n % members, booked evenly over the year; its id a UUIDv7 of
# the booking millisecond (as clearing.core.ids makes them), so the journal is in time order.
ENTRIES = """
INSERT INTO journal_entries (id, kind, org_id, booked_at, memo)
SELECT (lpad(to_hex(ms), 12, '0') || '7' || lpad(to_hex(n % 4096), 3, '0') || '8'
        || substr(md5(n::text), 1, 15))::uuid,
       CASE WHEN n % 10 < 6 THEN 'accrual' WHEN n % 10 < 8 THEN 'checkout_capture'
            WHEN n % 10 = 8 THEN 'expiry' ELSE 'adjustment' END,
       :org, to_timestamp(ms / 1000.0), CAST('{}' AS json)
FROM (SELECT n, CAST(CAST(:start_ms AS bigint) + n * CAST(:step_ms AS float8) AS bigint) AS ms
      FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS n) AS g
"""
# Two legs per entry: the member's (leg 0) and the system account's (leg 1), summing to zero.
POSTINGS = """
INSERT INTO postings (entry_id, leg, account_id, asset, amount)
SELECT id, leg, CASE WHEN leg = 0 THEN member ELSE system END, :asset,
       CASE WHEN leg = 0 THEN amount ELSE -amount END
FROM (
    SELECT (lpad(to_hex(ms), 12, '0') || '7' || lpad(to_hex(n % 4096), 3, '0') || '8'
            || substr(md5(n::text), 1, 15))::uuid AS id,
           md5('member-' || ((n / 10) % CAST(:members AS bigint)))::uuid AS member,
           CASE WHEN n % 10 < 6 THEN :issued WHEN n % 10 < 8 THEN :redeemed
                WHEN n % 10 = 8 THEN :expired ELSE :issued END AS system,
           CASE WHEN n % 10 < 6 THEN 50 + n % 200 WHEN n % 10 < 8 THEN -(10 + n % 50)
                WHEN n % 10 = 8 THEN -(1 + n % 20) ELSE 5 END AS amount
    FROM (SELECT n, CAST(CAST(:start_ms AS bigint) + n * CAST(:step_ms AS float8) AS bigint) AS ms
          FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS n) AS g
) AS e
CROSS JOIN (VALUES (0), (1)) AS l(leg)
"""
MEMBER_ACCOUNTS = """
INSERT INTO accounts (id, name, asset, kind, org_id, slots, floor_zero, created_at)
SELECT md5('member-' || m)::uuid, :asset || '/member/' || md5('member-' || m)::uuid, :asset,
       'member', :org, 1, true, :created
FROM generate_series(0, CAST(:members AS bigint) - 1) AS m
"""
MEMBER_BALANCES = """
INSERT INTO balances (account_id, slot, balance, held, floor_zero)
SELECT a.id, 0, coalesce(s.total, 0), 0, true
FROM accounts a LEFT JOIN (
    SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id
) AS s ON s.account_id = a.id
WHERE a.asset = :asset AND a.kind = 'member'
"""
SYSTEM_BALANCES = """
UPDATE balances b SET balance = s.total
FROM (SELECT account_id, sum(amount) AS total FROM postings
      WHERE account_id IN (SELECT id FROM accounts WHERE asset = :asset AND kind <> 'member')
      GROUP BY account_id) AS s
WHERE b.account_id = s.account_id AND b.slot = 0
"""
BY_ACCOUNT = "SELECT account_id, sum(amount) FROM postings GROUP BY account_id"
BY_ASSET = "SELECT asset, sum(amount), count(*) FROM postings GROUP BY asset"
CHUNK = 2_000_000
"""Entries per INSERT while loading."""


def _rss_mib() -> float:
    """Peak resident set size of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(url: str, members: int, postings: int) -> None:
    """The program, its members and a year of postings, as described above."""
    engine = make_engine(url)
    upgrade(engine)
    with transaction(engine) as session:
        platform = organisations.create_organisation(
            session,
            OrganisationCreate(kind="platform", name="Platform", currency="CNY"),
            CREATED,
        )
        del platform
        issuer = organisations.create_organisation(
            session, OrganisationCreate(kind="issuer", name="Big Bank", currency="CNY"), CREATED
        )
        programs.create_program(
            session,
            Caller(issuer.id, issuer.kind),
            ProgramCreate(code="BIG", name="Big", point_value=Decimal("0.005")),
            CREATED,
        )
    entries = postings // 2
    start_ms = int(YEAR_START.timestamp() * 1000)
    step_ms = int((YEAR_END - YEAR_START).total_seconds() * 1000) / entries
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))  # FKs, zero-sum
        system: dict[str, Any] = dict(
            conn.execute(
                text("SELECT kind, id FROM accounts WHERE asset = :a AND kind <> 'member'"),
                {"a": ASSET},
            ).all()
        )
        params: dict[str, Any] = {
            "org": issuer.id,
            "asset": ASSET,
            "members": members,
            "created": CREATED,
            "start_ms": start_ms,
            "step_ms": step_ms,
            "issued": system["issued"],
            "redeemed": system["redeemed"],
            "expired": system["expired"],
        }
        conn.execute(text(MEMBER_ACCOUNTS), params)
        for lo in range(0, entries, CHUNK):
            bounds = {"lo": lo, "hi": min(lo + CHUNK, entries) - 1}
            conn.execute(text(ENTRIES), params | bounds)
            conn.execute(text(POSTINGS), params | bounds)
            print(f"  loaded {min(lo + CHUNK, entries) * 2:,} postings", flush=True)
        conn.execute(text(MEMBER_BALANCES), params)
        conn.execute(text(SYSTEM_BALANCES), params)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def best(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of `repeat` runs, seconds, and its result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--postings", type=int, default=20_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--db", help="keep the loaded database under this name, and reuse it")
    args = parser.parse_args()
    name = args.db or "clearing_reports_bench"
    reuse = False
    if args.db:
        with _admin().connect() as conn:
            reuse = bool(
                conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).scalar()
            )
    if reuse:
        url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    else:
        url = _create_db(name)
    try:
        t0 = time.perf_counter()
        if not reuse:
            load(url, args.members, args.postings)
        load_seconds = time.perf_counter() - t0
        engine = make_engine(url)

        def plain(sql: str) -> Callable[[], int]:
            def run() -> int:
                with engine.connect() as conn:
                    return len(conn.execute(text(sql)).all())

            return run

        def report() -> list[dict[str, Any]]:
            with transaction(engine) as session:
                query = ReportQuery(date(2026, 1, 1), date(2026, 12, 31), None, "BIG")
                return liability(session, query).records()

        with engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM postings")).scalar_one()
        by_account, _ = best(args.repeat, plain(BY_ACCOUNT))
        by_asset, _ = best(args.repeat, plain(BY_ASSET))
        ours, rows = best(args.repeat, report)
        with transaction(engine) as session:
            held = member_balances(session, ["points:BIG"])["points:BIG"]
        ties = rows[-1]["closing"] == held
        engine.dispose()
        figures = {
            "members": args.members,
            "postings": count,
            "days": len(rows),
            "load_seconds": round(load_seconds, 1),
            "group_by_account_seconds": round(by_account, 3),
            "group_by_asset_seconds": round(by_asset, 3),
            "liability_seconds": round(ours, 3),
            "ratio_to_group_by_account": round(ours / by_account, 2),
            "ratio_to_group_by_asset": round(ours / by_asset, 2),
            "closing_ties_to_balances": ties,
            "peak_rss_mib": round(_rss_mib(), 1),
        }
        print()
        print(f"{'what':<48}{'seconds':>10}")
        print(
            f"{'GROUP BY account_id (' + format(count, ',') + ' postings)':<48}{by_account:>10.3f}"
        )
        print(f"{'GROUP BY asset':<48}{by_asset:>10.3f}")
        print(f"{'liability report, 365 daily rows':<48}{ours:>10.3f}")
        print(
            f"ratio to GROUP BY account_id: {ours / by_account:.2f}x; to GROUP BY asset: "
            f"{ours / by_asset:.2f}x (target: within 3x)"
        )
        print(f"last closing = member balances: {ties}; peak RSS {_rss_mib():.0f} MiB")
        print(json.dumps(figures))
        if not ties:
            sys.exit(1)
    finally:
        if not args.db:
            _drop_db(name)


if __name__ == "__main__":
    main()
