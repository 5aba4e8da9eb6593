"""Ledger throughput on PostgreSQL against pgbench (TPC-B) on the same server, in the same run.

    .venv/bin/python benchmarks/ledger_bench.py [--seconds 10] [--workers 8]

(a) single operations, one transaction each, by 8 worker processes: accrual, checkout
    authorisation, checkout capture, with checkouts spread over 50 merchants;
(b) the batched path: bulk accrual files of 1,000 lines, one transaction per file;
(c) the hot-account case: (a) again with every checkout at one merchant.
(a) and (b) run with the platform's risk policy and its default rules bound, as the app binds
them (`clearing.app.policy.open_engine`), and with none, in the order off, on, on, off (so that a
drift of the machine over the run weighs on both alike); the ratios say what the controls cost.
The merchants have agreements with the program (the controls ask for them).
The reference is pgbench's TPC-B with the same client count, scale = clients (as pgbench's
documentation advises). Prints a table, then one JSON line with every figure and ratio.
It also prints the CPU each side spends per operation: the client's (the worker processes) and
the server's (each worker's PostgreSQL backend, from /proc), against the server's CPU per TPC-B
transaction (the machine's busy time during pgbench less pgbench's own), which says how much
database work one operation is compared to the reference.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import resource
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "CLEARING_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MERCHANTS = 50
MEMBERS_PER_WORKER = 100
FILE_LINES = 1000


@dataclass(frozen=True)
class Setup:
    url: str
    issuer: tuple[str, str]
    merchants: list[tuple[str, str]]


def _admin() -> Engine:
    return create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


def _create_db(name: str) -> str:
    with _admin().connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _drop_db(name: str) -> None:
    with _admin().connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid`, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy, from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _backend_pid(engine: Engine) -> int:
    """The PostgreSQL backend of a one-connection engine (the pool keeps that connection)."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def pgbench(seconds: int, clients: int) -> tuple[float, float]:
    """TPC-B transactions per second on a scratch database of the same server, and the
    server's CPU milliseconds per transaction (the machine's busy time less pgbench's own)."""
    name = f"clearing_pgbench_{os.getpid()}"
    url = make_url(_create_db(name))
    env = {
        **os.environ,
        "PGHOST": url.host or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "postgres",
    }
    try:
        subprocess.run(
            ["pgbench", "-i", "-q", "-s", str(clients), name],
            check=True,
            capture_output=True,
            env=env,
        )
        busy, client = _machine_busy(), _children_cpu()
        out = subprocess.run(
            [
                "pgbench",
                "-n",
                "-c",
                str(clients),
                "-j",
                str(min(clients, os.cpu_count() or 2)),
                "-T",
                str(seconds),
                name,
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
        server_cpu = (_machine_busy() - busy) - (_children_cpu() - client)
    finally:
        _drop_db(name)
    tps = re.search(r"tps = ([0-9.]+)", out)
    done = re.search(r"number of transactions actually processed: ([0-9]+)", out)
    assert tps, out
    assert done, out
    return float(tps.group(1)), server_cpu / int(done.group(1)) * 1000


def setup(url: str, workers: int) -> Setup:
    """Platform, one issuer program, merchants, members with plenty of points."""
    from clearing.app.migrate import upgrade
    from clearing.core.db import make_engine, transaction
    from clearing.web.context import Caller
    from issuers import accruals, agreements, members, organisations, programs, tokens
    from issuers.schemas import (
        AccrualBatchCreate,
        AccrualCreate,
        AgreementCreate,
        MemberCreate,
        MerchantTrustSet,
        OrganisationCreate,
        ProgramCreate,
    )

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
        merchants = [
            organisations.create_organisation(
                s,
                OrganisationCreate(
                    kind="merchant", name=f"M{i}", currency="CNY", default_fee_rate=Decimal("0.006")
                ),
                now,
            )
            for i in range(MERCHANTS)
        ]
        caller = Caller(bank.id, "issuer")
        programs.create_program(
            s,
            caller,
            ProgramCreate(
                code="BANK", name="Bank points", point_value=Decimal("0.005"), expiry_months=12
            ),
            now,
        )
        # The issuer trusts the merchants: the bench measures the ledger, not token minting
        # (a checkout with a payment token costs one conditional UPDATE more).
        for merchant in merchants:
            tokens.set_merchant_trust(
                s, caller, "BANK", merchant.id, MerchantTrustSet(checkout_without_token=True)
            )
            proposal = agreements.propose(
                s,
                caller,
                AgreementCreate(program="BANK", merchant_id=merchant.id, accept=True, fund=True),
                now,
            )
            agreements.approve(s, Caller(merchant.id, "merchant"), proposal.id, now)
        for w in range(workers):
            for m in range(MEMBERS_PER_WORKER):
                members.create_member(
                    s, caller, "BANK", MemberCreate(external_id=f"w{w}-m{m}"), now
                )
    with transaction(engine) as s:
        items = [
            AccrualCreate(program="BANK", external_id=f"w{w}-m{m}", points=10**12)
            for w in range(workers)
            for m in range(MEMBERS_PER_WORKER)
        ]
        accruals.accrue_batch(s, caller, AccrualBatchCreate(items=items), now, "seed")
    engine.dispose()
    return Setup(url, (str(bank.id), "issuer"), [(str(m.id), "merchant") for m in merchants])


Job = tuple[Setup, int, float, bool, bool, Any, Any]


def _engine(conf: Setup, rules: bool) -> Engine:
    """A worker's engine: one connection, the risk policy bound or not."""
    from clearing.app.policy import risk_policy
    from clearing.core.config import Settings
    from clearing.core.db import make_engine
    from clearing.core.policy import bind_policy

    engine = make_engine(conf.url, pool_size=1, max_overflow=0)
    return bind_policy(engine, risk_policy(Settings.from_env())) if rules else engine


def _start(seconds: float, ready: Any) -> float:
    """Wait until every worker is ready, then run for `seconds`: returns the deadline."""
    ready.wait()
    return time.perf_counter() + seconds


def _single_worker(args: Job) -> None:
    """One worker: accrual, authorise, capture in a loop, one transaction each."""
    conf, worker, seconds, hot, rules, ready, queue = args
    from clearing.core.db import transaction
    from clearing.web.context import Caller
    from exchange import service as exchange
    from exchange.schemas import CaptureCreate, CheckoutCreate
    from issuers import accruals
    from issuers.schemas import AccrualCreate

    engine = _engine(conf, rules)
    backend = _backend_pid(engine)
    issuer = Caller(uuid.UUID(conf.issuer[0]), "issuer")
    merchants = [Caller(uuid.UUID(m), "merchant") for m, _ in conf.merchants]
    latencies: dict[str, list[float]] = {"accrual": [], "authorise": [], "capture": []}
    n = 0
    deadline = _start(seconds, ready)
    start, cpu, server = time.perf_counter(), time.process_time(), _proc_cpu(backend)
    while time.perf_counter() < deadline:
        ext = f"w{worker}-m{n % MEMBERS_PER_WORKER}"
        merchant = merchants[0] if hot else merchants[(worker * 7 + n) % MERCHANTS]
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        with transaction(engine) as s:
            accruals.accrue(
                s,
                issuer,
                AccrualCreate(program="BANK", external_id=ext, points=500),
                now,
                uuid.uuid4().hex,
            )
        t1 = time.perf_counter()
        with transaction(engine) as s:
            auth, _ = exchange.authorise(
                s,
                merchant,
                CheckoutCreate(
                    program="BANK", external_id=ext, order_total=1000, points_amount=300
                ),
                now,
                uuid.uuid4().hex,
            )
        t2 = time.perf_counter()
        with transaction(engine) as s:
            exchange.capture(s, merchant, auth.id, CaptureCreate(), now, uuid.uuid4().hex)
        t3 = time.perf_counter()
        latencies["accrual"].append(t1 - t0)
        latencies["authorise"].append(t2 - t1)
        latencies["capture"].append(t3 - t2)
        n += 1
    queue.put(
        (
            n * 3,
            time.perf_counter() - start,
            latencies,
            time.process_time() - cpu,
            _proc_cpu(backend) - server,
        )
    )
    engine.dispose()


def _batch_worker(args: Job) -> None:
    """One worker posting bulk accrual files of FILE_LINES lines, one transaction per file."""
    conf, worker, seconds, _, rules, ready, queue = args
    from clearing.core.db import transaction
    from clearing.web.context import Caller
    from issuers import accruals
    from issuers.schemas import AccrualBatchCreate, AccrualCreate

    engine = _engine(conf, rules)
    backend = _backend_pid(engine)
    issuer = Caller(uuid.UUID(conf.issuer[0]), "issuer")
    items = [
        AccrualCreate(
            program="BANK", external_id=f"w{worker}-m{i % MEMBERS_PER_WORKER}", points=1 + i
        )
        for i in range(FILE_LINES)
    ]
    req = AccrualBatchCreate(items=items)
    ops = 0
    latencies: list[float] = []
    deadline = _start(seconds, ready)
    start, cpu, server = time.perf_counter(), time.process_time(), _proc_cpu(backend)
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        with transaction(engine) as s:
            accruals.accrue_batch(s, issuer, req, datetime.now(UTC), uuid.uuid4().hex)
        latencies.append(time.perf_counter() - t0)
        ops += FILE_LINES
    queue.put(
        (
            ops,
            time.perf_counter() - start,
            {"file": latencies},
            time.process_time() - cpu,
            _proc_cpu(backend) - server,
        )
    )
    engine.dispose()


def run_phase(
    conf: Setup,
    workers: int,
    seconds: float,
    target: Callable[..., None],
    hot: bool = False,
    rules: bool = True,
) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    # Workers start, import and connect, then all start the clock together.
    ready = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=target, args=((conf, w, seconds, hot, rules, ready, queue),))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    ops = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    merged: dict[str, list[float]] = {}
    for _, _, lat, _, _ in results:
        for k, v in lat.items():
            merged.setdefault(k, []).extend(v)
    figures = {
        "ops_per_s": ops / elapsed,
        "ops": float(ops),
        "client_cpu_ms_per_op": sum(r[3] for r in results) / ops * 1000,
        "server_cpu_ms_per_op": sum(r[4] for r in results) / ops * 1000,
    }
    for k, v in merged.items():
        v.sort()
        figures[f"{k}_p50_ms"] = statistics.median(v) * 1000
        figures[f"{k}_p99_ms"] = v[int(len(v) * 0.99) - 1] * 1000 if len(v) > 1 else v[0] * 1000
    return figures


def merged(runs: list[dict[str, float]]) -> dict[str, float]:
    """Runs of one phase as one: operations over time, CPU per operation over all of them."""
    ops = sum(r["ops"] for r in runs)
    seconds = sum(r["ops"] / r["ops_per_s"] for r in runs)
    figures = dict(runs[0])
    figures["ops"] = ops
    figures["ops_per_s"] = ops / seconds
    for side in ("client", "server"):
        key = f"{side}_cpu_ms_per_op"
        figures[key] = sum(r[key] * r["ops"] for r in runs) / ops
    return figures


def rules_on_and_off(
    conf: Setup, workers: int, seconds: float, target: Callable[..., None]
) -> tuple[dict[str, float], dict[str, float]]:
    """A phase with the risk policy bound and without, in the order off, on, on, off."""
    off = [run_phase(conf, workers, seconds, target, rules=False)]
    on = [run_phase(conf, workers, seconds, target) for _ in range(2)]
    off.append(run_phase(conf, workers, seconds, target, rules=False))
    return merged(on), merged(off)


def main() -> None:
    """Run the benchmark; print a table, then one JSON line.

    Long on purpose: the script's phases, in the order they run and print; each measurement
    lives in its own function above.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    name = f"clearing_bench_{os.getpid()}"
    url = _create_db(name)
    try:
        conf = setup(url, args.workers)
        reference, reference_cpu = pgbench(args.seconds, args.workers)
        single, single_off = rules_on_and_off(conf, args.workers, args.seconds, _single_worker)
        batched, batched_off = rules_on_and_off(conf, args.workers, args.seconds, _batch_worker)
        hot = run_phase(conf, args.workers, args.seconds, _single_worker, hot=True)
        from clearing.core.check import check_ledger
        from clearing.core.db import make_engine, transaction

        engine = make_engine(url)
        with transaction(engine) as s:
            errors = check_ledger(s)
        engine.dispose()
    finally:
        _drop_db(name)
    peak_mib = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    figures = {
        "workers": args.workers,
        "seconds": args.seconds,
        "pgbench_tps": round(reference, 1),
        "pgbench_server_cpu_ms_per_txn": round(reference_cpu, 3),
        "cpu_ms_per_op": {
            f"{phase}_{side}": round(d[f"{side}_cpu_ms_per_op"], 3)
            for phase, d in (("a", single), ("b", batched), ("c", hot))
            for side in ("client", "server")
        },
        "a_single_ops_per_s": round(single["ops_per_s"], 1),
        "a_ratio_to_pgbench": round(single["ops_per_s"] / reference, 3),
        "a_target": 0.5,
        "b_batched_ops_per_s": round(batched["ops_per_s"], 1),
        "b_ratio_to_pgbench": round(batched["ops_per_s"] / reference, 3),
        "b_target": 10.0,
        "c_hot_ops_per_s": round(hot["ops_per_s"], 1),
        "c_ratio_to_a": round(hot["ops_per_s"] / single["ops_per_s"], 3),
        "c_target": 0.5,
        "latency_ms": {
            k: round(v, 2)
            for phase, d in (("a", single), ("b", batched), ("c", hot))
            for k, v in ((f"{phase}_{key}", val) for key, val in d.items() if key.endswith("_ms"))
        },
        "a_rules_off_ops_per_s": round(single_off["ops_per_s"], 1),
        "a_rules_on_to_off": round(single["ops_per_s"] / single_off["ops_per_s"], 3),
        "b_rules_off_ops_per_s": round(batched_off["ops_per_s"], 1),
        "b_rules_on_to_off": round(batched["ops_per_s"] / batched_off["ops_per_s"], 3),
        "rules_target": 0.85,
        "peak_rss_mib": round(peak_mib, 1),
        "ledger_check_errors": len(errors),
    }
    print(f"{'figure':<28}{'value':>14}{'ratio':>10}{'target':>9}")
    print(f"{'pgbench TPC-B tps':<28}{reference:>14.1f}")
    print(
        f"{'(a) single ops/s':<28}{single['ops_per_s']:>14.1f}{figures['a_ratio_to_pgbench']:>10}{'>=0.5':>9}"
    )
    print(
        f"{'(b) batched ops/s':<28}{batched['ops_per_s']:>14.1f}{figures['b_ratio_to_pgbench']:>10}{'>=10':>9}"
    )
    print(
        f"{'(c) hot merchant ops/s':<28}{hot['ops_per_s']:>14.1f}{figures['c_ratio_to_a']:>10}{'>=0.5':>9}"
    )
    print(
        f"{'(a) rules off ops/s':<28}{single_off['ops_per_s']:>14.1f}"
        f"{figures['a_rules_on_to_off']:>10}{'>=0.85':>9}"
    )
    print(
        f"{'(b) rules off ops/s':<28}{batched_off['ops_per_s']:>14.1f}"
        f"{figures['b_rules_on_to_off']:>10}{'>=0.85':>9}"
    )
    print(f"{'peak RSS MiB':<28}{peak_mib:>14.1f}")
    # What bounds (a): the database's own CPU per operation against its CPU per TPC-B transaction.
    print(f"{'CPU ms per op (server)':<28}{'TPC-B':>9}{'a':>9}{'b':>9}{'c':>9}")
    print(
        f"{'':<28}{reference_cpu:>9.3f}{single['server_cpu_ms_per_op']:>9.3f}"
        f"{batched['server_cpu_ms_per_op']:>9.3f}{hot['server_cpu_ms_per_op']:>9.3f}"
    )
    print(
        f"{'CPU ms per op (client)':<28}{'':>9}{single['client_cpu_ms_per_op']:>9.3f}"
        f"{batched['client_cpu_ms_per_op']:>9.3f}{hot['client_cpu_ms_per_op']:>9.3f}"
    )
    print(f"{'ledger check errors':<28}{len(errors):>14}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
