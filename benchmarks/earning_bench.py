"""Event accruals (earning rules, tier, campaigns) against plain points accruals, on PostgreSQL.

    .venv/bin/python benchmarks/earning_bench.py [--seconds 8] [--workers 2]

(a) single operations, one transaction each: a plain points accrual (`POST /v1/accruals`'s
    service) against a purchase event evaluated against 20 rules (17 spend rules, 3 behaviours,
    a day and a month cap) and 3 active campaigns (a multiplier, a spend X get Y, a
    tier-targeted multiplier), with a tier multiplier: both through the service layer, the
    platform's risk policy bound as the app binds it;
(b) bulk files of 1,000 lines, one transaction per file: accrual files against event files.
Each pair runs in the order plain, event, event, plain (a drift of the machine over the run
weighs on both alike). Prints a table, then one JSON line with every figure and ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "CLEARING_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MEMBERS_PER_WORKER = 200
FILE_LINES = 1000


def _admin() -> Engine:
    return create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


def setup(url: str, workers: int) -> str:
    """An issuer's program with 20 rules, 3 campaigns, tiers and members; the issuer's id."""
    from clearing.app.migrate import upgrade
    from clearing.core.db import make_engine, transaction
    from clearing.web.context import Caller
    from issuers import events, members, organisations, programs, repository, tiers
    from issuers.earning_schemas import CampaignCreate, EarningBookCreate
    from issuers.schemas import MemberCreate, OrganisationCreate, ProgramCreate

    now = datetime.now(UTC)
    engine = make_engine(url)
    upgrade(engine)
    with transaction(engine) as s:
        organisations.create_organisation(
            s,
            OrganisationCreate(
                kind="platform",
                name="Platform",
                currency="CNY",
                conversion_fee_rate=Decimal("0.01"),
            ),
            now,
        )
        bank = organisations.create_organisation(
            s, OrganisationCreate(kind="issuer", name="Bank", currency="CNY"), now
        )
        caller = Caller(bank.id, "issuer")
        programs.create_program(
            s,
            caller,
            ProgramCreate(code="BANK", name="Bank", point_value=Decimal("0.005"), expiry_months=12),
            now,
        )
        spend = [{"code": "base", "rate": "1"}]
        spend += [
            {"code": f"line{n}", "rate": str(1 + n % 3), "product_line": f"p{n}"} for n in range(8)
        ]
        spend += [
            {"code": f"mcc{n}", "rate": "2", "merchant_category": f"c{n}", "channel": "app"}
            for n in range(8)
        ]
        behaviours = [
            {"event": "sign_up", "points": 50, "frequency": "once"},
            {
                "event": "check_in",
                "points": 1,
                "frequency": "day",
                "streak_days": 7,
                "streak_points": 20,
            },
            {"event": "survey", "points": 5, "frequency": "month", "max_per_period": 2},
        ]
        events.publish_book(
            s,
            caller,
            "BANK",
            EarningBookCreate.model_validate(
                {
                    "spend_rules": spend,
                    "behaviours": behaviours,
                    "day_cap": 10**12,
                    "month_cap": 10**13,
                }
            ),
            now,
        )
        start = now - timedelta(days=1)
        for body in (
            {"code": "double", "kind": "multiplier", "multiplier": "2"},
            {"code": "big", "kind": "spend_bonus", "min_spend": 100, "bonus_points": 5},
            {"code": "gold", "kind": "multiplier", "multiplier": "3", "tiers": ["gold"]},
        ):
            events.create_campaign(
                s,
                caller,
                "BANK",
                CampaignCreate.model_validate(
                    {**body, "name": body["code"], "starts_at": start, "budget": 10**14}
                ),
                now,
            )
        program = repository.program_by_code(s, "BANK")
        assert program is not None
        tiers.define_tier(s, program.id, "standard", "Standard", 0, Decimal(1), now)
        silver = tiers.define_tier(s, program.id, "silver", "Silver", 1, Decimal("1.5"), now)
        for w in range(workers):
            for m in range(MEMBERS_PER_WORKER):
                members.create_member(
                    s, caller, "BANK", MemberCreate(external_id=f"w{w}-m{m}"), now
                )
                if m % 2:
                    found = repository.member_by_external_id(s, program.id, f"w{w}-m{m}")
                    assert found is not None
                    tiers.place_member(s, found.id, silver.id, now)
    engine.dispose()
    return str(bank.id)


Job = tuple[str, str, int, float, str, Any, Any]


def _worker(args: Job) -> None:
    url, issuer_id, worker, seconds, mode, ready, queue = args
    from clearing.app.policy import risk_policy
    from clearing.core.config import Settings
    from clearing.core.db import make_engine, transaction
    from clearing.core.policy import bind_policy
    from clearing.web.context import Caller
    from issuers import accruals, events
    from issuers.earning_schemas import EventBatchCreate, EventCreate
    from issuers.schemas import AccrualBatchCreate, AccrualCreate

    engine = bind_policy(
        make_engine(url, pool_size=1, max_overflow=0), risk_policy(Settings.from_env())
    )
    issuer = Caller(uuid.UUID(issuer_id), "issuer")

    def member(i: int) -> str:
        return f"w{worker}-m{i % MEMBERS_PER_WORKER}"

    def event(i: int) -> EventCreate:
        return EventCreate(
            external_id=member(i),
            kind="purchase",
            spend=1000 + i % 5000,
            product_line=f"p{i % 10}",
            merchant_category=f"c{i % 9}",
            channel="app",
        )

    accrual_file = AccrualBatchCreate(
        items=[
            AccrualCreate(program="BANK", external_id=member(i), points=10 + i)
            for i in range(FILE_LINES)
        ]
    )
    event_file = EventBatchCreate(items=[event(i) for i in range(FILE_LINES)])

    def one(i: int) -> int:
        with transaction(engine) as s:
            now = datetime.now(UTC)
            if mode == "accrual":
                item = AccrualCreate(program="BANK", external_id=member(i), points=10 + i)
                accruals.accrue(s, issuer, item, now, uuid.uuid4().hex)
                return 1
            if mode == "event":
                events.post_event(s, issuer, "BANK", event(i), now, uuid.uuid4().hex)
                return 1
            if mode == "accrual_file":
                accruals.accrue_batch(s, issuer, accrual_file, now, uuid.uuid4().hex)
            else:
                events.post_event_batch(s, issuer, "BANK", event_file, now, uuid.uuid4().hex)
            return FILE_LINES

    # Warm up (statements compiled and prepared, copies read) before the clock starts.
    for i in range(20 if mode in ("accrual", "event") else 2):
        one(i)
    ops, i = 0, 0
    ready.wait()
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        ops += one(i)
        i += 1
    queue.put((ops, time.perf_counter() - start))
    engine.dispose()


def run_phase(url: str, issuer: str, workers: int, seconds: float, mode: str) -> float:
    """Operations (lines, for files) per second of `workers` processes running `mode`."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    ready = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_worker, args=((url, issuer, w, seconds, mode, ready, queue),))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return float(sum(r[0] for r in results) / max(r[1] for r in results))


def paired(run: Callable[[str], float], plain: str, rules: str) -> tuple[float, float]:
    """Plain and rules-based rates, measured in the order plain, rules, rules, plain."""
    a = run(plain)
    b = run(rules)
    c = run(rules)
    d = run(plain)
    return (a + d) / 2, (b + c) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    name = f"earning_bench_{uuid.uuid4().hex[:8]}"
    with _admin().connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        issuer = setup(url, args.workers)

        def run(mode: str) -> float:
            return run_phase(url, issuer, args.workers, args.seconds, mode)

        accrual, event = paired(run, "accrual", "event")
        accrual_file, event_file = paired(run, "accrual_file", "event_file")
    finally:
        with _admin().connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    figures = {
        "workers": args.workers,
        "seconds_per_phase": args.seconds,
        "a_accrual_ops_per_s": round(accrual, 1),
        "a_event_ops_per_s": round(event, 1),
        "a_event_to_accrual": round(event / accrual, 3),
        "b_accrual_file_lines_per_s": round(accrual_file, 1),
        "b_event_file_lines_per_s": round(event_file, 1),
        "b_event_to_accrual": round(event_file / accrual_file, 3),
        "target": 0.8,
    }
    print(f"{'phase':<34}{'per s':>12}{'ratio':>8}{'target':>8}")
    print(f"{'(a) plain accrual ops':<34}{accrual:>12.1f}")
    print(
        f"{'(a) event accrual ops':<34}{event:>12.1f}{figures['a_event_to_accrual']:>8}{'>=0.8':>8}"
    )
    print(f"{'(b) accrual file lines':<34}{accrual_file:>12.1f}")
    print(
        f"{'(b) event file lines':<34}{event_file:>12.1f}{figures['b_event_to_accrual']:>8}{'>=0.8':>8}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
