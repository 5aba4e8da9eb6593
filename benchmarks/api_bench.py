"""Signed partner API throughput on PostgreSQL, against the ledger's own rate as the reference.

Usage: .venv/bin/python benchmarks/api_bench.py [--clients 8] [--seconds 10] [--workers N]
Then a probe: 4 unsigned 18 MB uploads at once, timed to their refusal (with the bytes the
server had taken by then), while GET /v1/platform/keys is timed alongside them.
Creates a database from CLEARING_BENCH_DATABASE_URL (admin URL, default
postgresql://postgres@127.0.0.1:5432/test), drops it afterwards. Each operation is one of: an
accrual, or a checkout (authorise then capture, two requests). The reference runs the same
operations by calling the services directly from 8 worker processes, one transaction each.
The clients are the SDK (signing every request, verifying every response) on the same cores as
the server, so their CPU per request is reported next to the server's.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import clearing.app.tables  # noqa: F401
from clearing.app.migrate import upgrade
from clearing.core.db import make_engine, transaction
from clearing.core.timeutil import utcnow
from clearing.sdk.client import PartnerClient
from clearing.web.context import Caller
from exchange.schemas import CaptureCreate, CheckoutCreate
from exchange.service import authorise, capture
from issuers.accruals import accrue
from issuers.keys import ApiKeyCreate, add_key
from issuers.members import create_member
from issuers.organisations import create_organisation
from issuers.programs import create_program
from issuers.schemas import (
    AccrualCreate,
    MemberCreate,
    MerchantTrustSet,
    OrganisationCreate,
    ProgramCreate,
)
from issuers.tokens import set_merchant_trust

PROGRAM = "BENCH"
MEMBERS_PER_CLIENT = 50
START_POINTS = 10_000_000


def _pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def setup(url: str, clients: int) -> dict[str, Any]:
    """Platform, one issuer with a program, one merchant, members with points, two API keys."""
    engine = make_engine(url)
    upgrade(engine)
    now = utcnow()
    issuer_key, merchant_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with transaction(engine) as s:
        create_organisation(s, OrganisationCreate(kind="platform", name="P", currency="CNY"), now)
        issuer = create_organisation(
            s, OrganisationCreate(kind="issuer", name="I", currency="CNY"), now
        )
        merchant = create_organisation(
            s, OrganisationCreate(kind="merchant", name="M", currency="CNY"), now
        )
        ikey = add_key(s, issuer.id, ApiKeyCreate(public_key=_pem(issuer_key)), now)
        mkey = add_key(s, merchant.id, ApiKeyCreate(public_key=_pem(merchant_key)), now)
        icaller = Caller(issuer.id, "issuer")
        create_program(
            s, icaller, ProgramCreate(code=PROGRAM, name="Bench", point_value=Decimal("0.01")), now
        )
        # Trusted: the bench compares a signed checkout with the bare ledger, token-free on both.
        set_merchant_trust(
            s, icaller, PROGRAM, merchant.id, MerchantTrustSet(checkout_without_token=True)
        )
    members = [f"m{n}" for n in range(2 * clients * MEMBERS_PER_CLIENT)]
    with transaction(engine) as s:
        for m in members:
            create_member(s, icaller, PROGRAM, MemberCreate(external_id=m), now)
            accrue(
                s,
                icaller,
                AccrualCreate(program=PROGRAM, external_id=m, points=START_POINTS),
                now,
                f"seed-{m}",
            )
    engine.dispose()
    return {
        "issuer": (str(issuer.id), ikey.keyid, _raw(issuer_key)),
        "merchant": (str(merchant.id), mkey.keyid, _raw(merchant_key)),
        "members": members,
    }


def _members(world: dict[str, Any], worker: int, half: int) -> list[str]:
    # Disjoint members per worker (and per half: reference vs API) so no two workers contend.
    members: list[str] = world["members"]
    start = (half * 8 + worker) * MEMBERS_PER_CLIENT % len(members)
    return members[start : start + MEMBERS_PER_CLIENT]


def reference_worker(
    url: str, world: dict[str, Any], worker: int, seconds: float, out: Any
) -> None:
    """Services called directly: one transaction per operation."""
    engine = make_engine(url, pool_size=2, max_overflow=0)
    issuer = Caller(uuid.UUID(world["issuer"][0]), "issuer")
    merchant = Caller(uuid.UUID(world["merchant"][0]), "merchant")
    members = _members(world, worker, 0)
    ops = n = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        m = members[n % len(members)]
        n += 1
        if n % 2 == 1:
            with transaction(engine) as s:
                accrue(
                    s,
                    issuer,
                    AccrualCreate(program=PROGRAM, external_id=m, points=10),
                    utcnow(),
                    uuid.uuid4().hex,
                )
            ops += 1
        else:
            with transaction(engine) as s:
                req = CheckoutCreate(
                    program=PROGRAM, external_id=m, order_total=500, points_amount=300
                )
                checkout, _ = authorise(s, merchant, req, utcnow(), uuid.uuid4().hex)
            with transaction(engine) as s:
                capture(s, merchant, checkout.id, CaptureCreate(), utcnow(), uuid.uuid4().hex)
            ops += 2
    engine.dispose()
    out.put(ops)


def api_worker(base: str, world: dict[str, Any], worker: int, seconds: float, out: Any) -> None:
    """One client: signed requests over HTTP with keep-alive, responses verified.

    Puts its latencies and the CPU seconds it spent sending them.
    """

    def client(who: str) -> PartnerClient:
        _, keyid, raw = world[who]
        return PartnerClient(base, keyid, Ed25519PrivateKey.from_private_bytes(raw))

    issuer, merchant = client("issuer"), client("merchant")
    issuer.platform_keys()
    merchant.platform_keys()
    members = _members(world, worker, 1)
    latencies: list[float] = []
    n = 0
    cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        m = members[n % len(members)]
        t0 = time.perf_counter()
        if n % 2 == 0:
            issuer.accrue(PROGRAM, m, 10)
            latencies.append(time.perf_counter() - t0)
        else:
            checkout = merchant.authorise(PROGRAM, m, 500, 300)
            t1 = time.perf_counter()
            merchant.capture(checkout["id"])
            latencies += [t1 - t0, time.perf_counter() - t1]
        n += 1
    out.put((latencies, time.process_time() - cpu))


def _unsigned_upload(port: int, size: int) -> tuple[float, int]:
    """Seconds until an unsigned upload of ``size`` bytes is answered, and the bytes sent by then."""
    head = (
        "POST /v1/accrual-batches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    item = b'{"program":"BENCH","external_id":"m0","points":1},'
    tail = b'{"program":"BENCH","external_id":"m0","points":1}]}'
    lines = (size - 10 - len(tail)) // len(item)
    body = b'{"items":[' + item * lines + tail
    body += b" " * (size - len(body))  # valid JSON of exactly ``size`` bytes: parsing is the cost
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.perf_counter()
        sock.sendall(head)
        while True:
            readable, writable, _ = select.select([sock], [sock] if sent < size else [], [], 30)
            if readable:
                sock.recv(65536)
                return time.perf_counter() - started, sent
            if not writable:
                return time.perf_counter() - started, sent
            try:
                sent += sock.send(body[sent : sent + 65536])
            except OSError:
                return time.perf_counter() - started, sent


def stall_probe(base: str, port: int, uploads: int = 4, size: int = 18_000_000) -> dict[str, Any]:
    """Refusal time of unsigned uploads, and the keys endpoint's latency meanwhile."""
    refusals: list[tuple[float, int]] = []
    keys: list[float] = []
    done = threading.Event()
    warm = threading.Event()

    def upload() -> None:
        refusals.append(_unsigned_upload(port, size))

    def poll_keys() -> None:
        with httpx.Client(base_url=base) as http:
            while not done.is_set():
                started = time.perf_counter()
                http.get("/v1/platform/keys").raise_for_status()
                keys.append(time.perf_counter() - started)
                warm.set()

    poller = threading.Thread(target=poll_keys)
    poller.start()
    warm.wait(30)
    keys.clear()  # the warm-up request opened the connection; only those during uploads count
    threads = [threading.Thread(target=upload) for _ in range(uploads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    poller.join()
    return {
        "unsigned_upload_bytes": size,
        "unsigned_refusal_max_ms": round(max(t for t, _ in refusals) * 1000, 1),
        "unsigned_bytes_sent_max": max(n for _, n in refusals),
        "keys_during_uploads_max_ms": round(max(keys) * 1000, 1) if keys else None,
        "keys_during_uploads": len(keys),
    }


def _cpu_snapshot() -> dict[int, tuple[int, str, float]] | None:
    """Every process: (parent pid, command line, CPU seconds so far); None without Linux /proc."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        snapshot: dict[int, tuple[int, str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, UnicodeDecodeError):
                continue
            # After the command: state, ppid, ..., utime (14th field) and stime (15th).
            cpu = (int(stat[11]) + int(stat[12])) / tick
            snapshot[int(entry.name)] = (int(stat[1]), command, cpu)
        return snapshot
    except (OSError, ValueError):
        return None


def _cpu_used(
    before: dict[int, tuple[int, str, float]] | None,
    after: dict[int, tuple[int, str, float]] | None,
    server: int,
    database: str,
) -> tuple[float | None, float | None]:
    """CPU seconds between two snapshots: of the server (uvicorn and its workers), and of the
    PostgreSQL backends serving the benchmark's database."""
    if before is None or after is None:
        return None, None
    server_cpu = database_cpu = 0.0
    for pid, (ppid, command, cpu) in after.items():
        used = cpu - (before[pid][2] if pid in before else 0.0)
        if server in (pid, ppid):
            server_cpu += used
        elif command.startswith("postgres:") and f" {database} " in command:
            database_cpu += used
    return server_cpu, database_cpu


def _per_request(seconds: float | None, requests: int) -> float | None:
    return None if seconds is None else round(seconds / requests * 1000, 2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(target: Any, args: list[tuple[Any, ...]]) -> list[Any]:
    queue: Any = mp.Queue()
    procs = [mp.Process(target=target, args=(*a, queue)) for a in args]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return results


def main() -> None:
    """Run the benchmark; print a table, then one JSON line.

    Long on purpose: the script's phases, in the order they run and print; each measurement
    lives in its own function above.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    admin_url = os.environ.get(
        "CLEARING_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    name = f"clearing_bench_{os.getpid()}"
    admin = create_engine(
        make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    server: subprocess.Popen[bytes] | None = None
    try:
        world = setup(url, args.clients)
        print(
            f"reference: services directly, {args.clients} processes, {args.seconds:.0f} s",
            flush=True,
        )
        ops = sum(
            _run(reference_worker, [(url, world, w, args.seconds) for w in range(args.clients)])
        )
        ledger_rate = ops / args.seconds

        port = _free_port()
        keydir = tempfile.mkdtemp(prefix="clearing-bench-")
        env = {
            **os.environ,
            "CLEARING_DATABASE_URL": url,
            "CLEARING_PLATFORM_KEY": str(Path(keydir) / "platform.pem"),
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "clearing.app.factory:app_from_env",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        time.sleep(1.0)  # every worker up
        print(
            f"API: uvicorn x{args.workers} workers, {args.clients} clients, {args.seconds:.0f} s",
            flush=True,
        )
        before = _cpu_snapshot()
        started = time.perf_counter()
        results = _run(api_worker, [(base, world, w, args.seconds) for w in range(args.clients)])
        elapsed = time.perf_counter() - started
        server_cpu, database_cpu = _cpu_used(before, _cpu_snapshot(), server.pid, name)
        latencies = sorted(x for lst, _ in results for x in lst)
        client_cpu = sum(cpu for _, cpu in results)
        api_rate = len(latencies) / args.seconds
        quantiles = statistics.quantiles(latencies, n=100)
        figures = {
            "clients": args.clients,
            "uvicorn_workers": args.workers,
            "seconds": args.seconds,
            "cpus": os.cpu_count(),
            "api_requests": len(latencies),
            "api_req_per_s": round(api_rate, 1),
            "p50_ms": round(quantiles[49] * 1000, 2),
            "p99_ms": round(quantiles[98] * 1000, 2),
            "ledger_ops_per_s": round(ledger_rate, 1),
            "ratio": round(api_rate / ledger_rate, 3),
            "target_ratio": 0.5,
            "target_p50_ms": 50,
            "target_p99_ms": 50,
            "ratio_met": api_rate / ledger_rate >= 0.5,
            "p50_met": quantiles[49] * 1000 < 50,
            "p99_met": quantiles[98] * 1000 < 50,
            "client_cpu_ms_per_req": round(client_cpu / len(latencies) * 1000, 2),
            "server_cpu_ms_per_req": _per_request(server_cpu, len(latencies)),
            "database_cpu_ms_per_req": _per_request(database_cpu, len(latencies)),
            "wall_s": round(elapsed, 2),
            **stall_probe(base, port),
        }
        print(f"API {api_rate:.0f} req/s, p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")
        print(f"ledger {ledger_rate:.0f} op/s; ratio {figures['ratio']}")
        print(
            f"CPU per request: clients {figures['client_cpu_ms_per_req']} ms, "
            f"server {figures['server_cpu_ms_per_req']} ms, "
            f"database {figures['database_cpu_ms_per_req']} ms"
        )
        print(
            f"unsigned {figures['unsigned_upload_bytes']} B uploads x4: refused within "
            f"{figures['unsigned_refusal_max_ms']} ms, {figures['unsigned_bytes_sent_max']} B sent; "
            f"GET /v1/platform/keys meanwhile at most {figures['keys_during_uploads_max_ms']} ms"
        )
        print(json.dumps(figures))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
