"""Client CPU per ledger transaction, single process, on PostgreSQL: where the time goes.

    .venv/bin/python benchmarks/ledger_cpu.py [--iterations 200]

Runs accrual, authorise and capture in a loop (one transaction each) and prints the client's CPU
time and the wall time per transaction, then the share of client CPU per library (cProfile with a
CPU clock). The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

from ledger_bench import _create_db, _drop_db, setup

from clearing.core.db import make_engine, transaction
from clearing.web.context import Caller
from exchange import service as exchange
from exchange.schemas import CaptureCreate, CheckoutCreate
from issuers import accruals
from issuers.schemas import AccrualCreate

OUR_PACKAGES = ("clearing", "issuers", "exchange", "settlement", "risk", "reports")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    name = f"clearing_cpu_{uuid.uuid4().hex[:8]}"
    url = _create_db(name)
    try:
        conf = setup(url, 1)
        engine = make_engine(url)
        issuer = Caller(uuid.UUID(conf.issuer[0]), "issuer")
        merchant = Caller(uuid.UUID(conf.merchants[0][0]), "merchant")

        def loop(n: int) -> None:
            for i in range(n):
                now = datetime.now(UTC)
                member = f"w0-m{i % 100}"
                with transaction(engine) as s:
                    req = AccrualCreate(program="BANK", external_id=member, points=500)
                    accruals.accrue(s, issuer, req, now, uuid.uuid4().hex)
                with transaction(engine) as s:
                    order = CheckoutCreate(
                        program="BANK", external_id=member, order_total=1000, points_amount=300
                    )
                    auth, _ = exchange.authorise(s, merchant, order, now, uuid.uuid4().hex)
                with transaction(engine) as s:
                    exchange.capture(s, merchant, auth.id, CaptureCreate(), now, uuid.uuid4().hex)

        loop(20)
        cpu, wall = time.process_time(), time.perf_counter()
        loop(args.iterations)
        transactions = 3 * args.iterations
        cpu_ms = (time.process_time() - cpu) / transactions * 1000
        wall_ms = (time.perf_counter() - wall) / transactions * 1000
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        loop(max(1, args.iterations // 2))
        profile.disable()
        engine.dispose()
    finally:
        _drop_db(name)
    shares: Counter[str] = Counter()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (path, _line, _fn), (_cc, _nc, own, _cum, _callers) in stats.items():
        if "sqlalchemy" in path:
            shares["sqlalchemy"] += own
        elif "psycopg" in path:
            shares["psycopg"] += own
        elif "pydantic" in path:
            shares["pydantic"] += own
        elif "site-packages" not in path and any(f"/{p}/" in path for p in OUR_PACKAGES):
            shares["ours"] += own
        else:
            shares["python and other"] += own
    total = sum(shares.values())
    percent = {k: round(100 * v / total, 1) for k, v in shares.most_common()}
    print(f"client CPU per transaction: {cpu_ms:.2f} ms; wall per transaction: {wall_ms:.2f} ms")
    for key, value in percent.items():
        print(f"  {key:<18}{value:>6.1f}% of client CPU")
    print(
        json.dumps(
            {
                "transactions": transactions,
                "client_cpu_ms_per_txn": round(cpu_ms, 2),
                "wall_ms_per_txn": round(wall_ms, 2),
                "cpu_share_percent": percent,
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
