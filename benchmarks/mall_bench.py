"""The points mall's hot item on PostgreSQL: the last 1,000 units sold out by 8 processes, against
the checkout's single operations in the same run.

    .venv/bin/python benchmarks/mall_bench.py [--workers 8] [--seconds 10] [--rounds 3]

(ref)  checkout single operations, one transaction each, by `--workers` processes for `--seconds`:
       authorise, then capture (both counted as operations; no accrual: the members hold points
       enough), spread over 50 merchants, as `ledger_bench.py`'s phase (a) minus its accrual;
(mall) one item (a supplier's, sold at an agreed wholesale rate) with exactly 1,000 units in
       stock and no member limit; `--workers` processes each place orders of 1 unit, each order
       from another member, as fast as they can until they are refused `out_of_stock`. The rate
       is orders confirmed over the time from the start barrier to the last confirmed order.
       Each round sells out a fresh item, and is checked: 1,000 confirmed, no stock left, the
       buyers debited exactly 1,000 x the price, no hold left open.
Both run with the platform's risk policy bound as the app binds it, and the workers warm up
(statements prepared, copies read) before their clock starts. The two alternate, ref, mall,
mall, ref, ref, mall ... (a drift of the machine weighs on both alike); each reports the median
of its rounds, and the ratio is mall orders/s over checkout operations/s (target 0.5).

Where the time goes, for both: each worker's CPU and its PostgreSQL backend's CPU per operation
(from /proc), the machine's busy share of its CPUs (near 1.0: the run is bound by CPU, and time
a backend spends waiting on a lock is time the others use) and the share the bench's own
processes used (lower than the busy share: something else ran on the machine), and the wait events of the bench's backends sampled from `pg_stat_activity`; for
the mall, also each order's time split over its parts (the risk screen, the ledger posting, the
stock, the commit), measured by wrapping those calls in the worker processes only.
Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from queue import Empty
from typing import Any

# The scratch database and the CPU counters, as the ledger bench has them (the script's folder
# is on the path when it runs).
from ledger_bench import _backend_pid, _create_db, _drop_db, _machine_busy, _proc_cpu
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

MERCHANTS = 50
MEMBERS_PER_WORKER = 100
STOCK = 1000
PRICE = 100  # points per unit of the hot item
WARM_UP = 20  # operations per worker before the clock starts
TARGET = 0.5
PARTS = ("screen", "ledger", "stock", "commit")


@dataclass(frozen=True)
class Setup:
    url: str
    issuer: str
    supplier: str
    merchants: list[str]


def setup(url: str, workers: int) -> Setup:
    """Platform, one issuer program, checkout merchants, a supplier, members with plenty of
    points: per worker its checkout members, its buyers and one member for warming up."""
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
        supplier = organisations.create_organisation(
            s, OrganisationCreate(kind="merchant", name="Supplier", currency="CNY"), now
        )
        caller = Caller(bank.id, "issuer")
        programs.create_program(
            s,
            caller,
            ProgramCreate(
                code="BANK", name="Bank points", point_value=Decimal("0.005"), expiry_months=12
            ),
            now,
        )
        # The issuer trusts the merchants, as in ledger_bench: the reference is the ledger's
        # checkout, not token minting.
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
        proposal = agreements.propose(
            s,
            Caller(supplier.id, "merchant"),
            AgreementCreate(
                program="BANK",
                accept=False,
                fund=False,
                supply=True,
                wholesale_rate=Decimal("0.85"),
            ),
            now,
        )
        agreements.approve(s, caller, proposal.id, now)
        for external_id in _all_members(workers):
            members.create_member(s, caller, "BANK", MemberCreate(external_id=external_id), now)
    with transaction(engine) as s:
        items = [
            AccrualCreate(program="BANK", external_id=external_id, points=10**12)
            for external_id in _all_members(workers)
        ]
        accruals.accrue_batch(s, caller, AccrualBatchCreate(items=items), now, "seed")
    engine.dispose()
    return Setup(url, str(bank.id), str(supplier.id), [str(m.id) for m in merchants])


def _all_members(workers: int) -> Iterator[str]:
    for w in range(workers):
        yield f"warm-{w}"
        for m in range(MEMBERS_PER_WORKER):
            yield f"c{w}-{m}"  # checkouts
            yield f"b{w}-{m}"  # mall buyers


def _hot_item(url: str, owner: str, units: int) -> uuid.UUID:
    """A supplier's item on sale in BANK at PRICE points, with `units` in stock and no member
    limit, made through the catalogue as the supplier would."""
    from clearing.core.db import make_engine, transaction
    from clearing.web.context import Caller
    from exchange.mall import catalogue
    from exchange.mall.schemas import ItemCreate, ItemUpdate, OfferSet

    now = datetime.now(UTC)
    supplier = Caller(uuid.UUID(owner), "merchant")
    engine = make_engine(url, pool_size=1, max_overflow=0)
    with transaction(engine) as s:
        item = catalogue.create_item(
            s,
            supplier,
            ItemCreate(
                sku=f"HOT-{uuid.uuid4().hex[:8]}",
                title="Headphones",
                value_amount=3000,
                stock=units,
            ),
            now,
        )
        catalogue.set_offer(s, supplier, item.id, OfferSet(program="BANK", points=PRICE), now)
        catalogue.update_item(s, supplier, item.id, ItemUpdate(status="on_sale"), now)
        item_id = item.id
    engine.dispose()
    return item_id


# workers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    conf: Setup
    worker: int
    seconds: float
    item: str
    warm_item: str


@dataclass
class Result:
    """One worker's figures: operations done (confirmed orders, for the mall), the clock's start
    and end (perf_counter: one clock for every process of the machine), CPU, its own timings."""

    ops: int
    start: float
    end: float
    client_cpu: float
    server_cpu: float
    refused: Counter[str]
    parts: dict[str, float]
    order_seconds: float
    busy: float
    """The machine's CPUs' busy share over this worker's clock (1.0: every core busy)."""


def _engine(conf: Setup) -> Engine:
    """A worker's engine: one connection, the risk policy bound as the app binds it."""
    from clearing.app.policy import risk_policy
    from clearing.core.config import Settings
    from clearing.core.db import make_engine
    from clearing.core.policy import bind_policy

    engine = make_engine(conf.url, pool_size=1, max_overflow=0)
    return bind_policy(engine, risk_policy(Settings.from_env()))


def _checkout_worker(job: Job, ready: Any, queue: Any) -> None:
    """Authorise, capture in a loop, one transaction each, for `job.seconds`."""
    from clearing.core.db import transaction
    from clearing.web.context import Caller
    from exchange import service as exchange
    from exchange.schemas import CaptureCreate, CheckoutCreate

    engine = _engine(job.conf)
    backend = _backend_pid(engine)
    merchants = [Caller(uuid.UUID(m), "merchant") for m in job.conf.merchants]

    def checkout(n: int, external_id: str) -> None:
        merchant = merchants[(job.worker * 7 + n) % MERCHANTS]
        now = datetime.now(UTC)
        with transaction(engine) as s:
            auth, _ = exchange.authorise(
                s,
                merchant,
                CheckoutCreate(
                    program="BANK", external_id=external_id, order_total=1000, points_amount=300
                ),
                now,
                uuid.uuid4().hex,
            )
        with transaction(engine) as s:
            exchange.capture(s, merchant, auth.id, CaptureCreate(), now, uuid.uuid4().hex)

    for n in range(WARM_UP // 2):
        checkout(n, f"warm-{job.worker}")
    ready.wait()
    start, cpu, server = time.perf_counter(), time.process_time(), _proc_cpu(backend)
    busy = _machine_busy()
    deadline = start + job.seconds
    n = 0
    while time.perf_counter() < deadline:
        checkout(n, f"c{job.worker}-{n % MEMBERS_PER_WORKER}")
        n += 1
    end = time.perf_counter()
    queue.put(
        Result(
            n * 2,
            start,
            end,
            time.process_time() - cpu,
            _proc_cpu(backend) - server,
            Counter(),
            {},
            end - start,
            _busy_share(busy, start, end),
        )
    )
    engine.dispose()


def _busy_share(busy: float, start: float, end: float) -> float:
    """The machine's busy share since `busy` was read at `start`."""
    return (_machine_busy() - busy) / ((end - start) * (os.cpu_count() or 1))


@contextmanager
def _timing(parts: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        parts[name] += time.perf_counter() - t0


def _timed(owner: Any, attribute: str, parts: dict[str, float], name: str) -> None:
    """Wrap `owner.attribute` so that the time spent in it adds to `parts[name]`."""
    inner: Callable[..., Any] = getattr(owner, attribute)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _timing(parts, name):
            return inner(*args, **kwargs)

    setattr(owner, attribute, wrapper)


def _mall_worker(job: Job, ready: Any, queue: Any) -> None:
    """Orders of 1 unit of the hot item, each from the next buyer, until out of stock."""
    from clearing.core.db import transaction
    from clearing.core.errors import ClearingError
    from clearing.core.ledger import Ledger
    from clearing.web.context import Caller
    from exchange.mall import orders, repository
    from exchange.mall.schemas import OrderCreate

    engine = _engine(job.conf)
    backend = _backend_pid(engine)
    issuer = Caller(uuid.UUID(job.conf.issuer), "issuer")
    parts = dict.fromkeys(PARTS, 0.0)
    # The wrappers live in this worker process only; the order itself runs unchanged.
    _timed(orders, "screen", parts, "screen")
    _timed(Ledger, "post", parts, "ledger")
    _timed(repository, "take_stock", parts, "stock")

    def order(item: uuid.UUID, external_id: str) -> None:
        with transaction(engine) as s:
            orders.place_order(
                s,
                issuer,
                "BANK",
                OrderCreate(external_id=external_id, item_id=item, quantity=1),
                datetime.now(UTC),
                uuid.uuid4().hex,
            )
            # The commit, timed: the transaction's block ends right after this one.
            t_commit = time.perf_counter()
        parts["commit"] += time.perf_counter() - t_commit

    warm = uuid.UUID(job.warm_item)
    for _ in range(WARM_UP):
        order(warm, f"warm-{job.worker}")
    for name in PARTS:
        parts[name] = 0.0
    item = uuid.UUID(job.item)
    refused: Counter[str] = Counter()
    confirmed, n, order_seconds = 0, 0, 0.0
    ready.wait()
    start, cpu, server = time.perf_counter(), time.process_time(), _proc_cpu(backend)
    busy = _machine_busy()
    last = start
    while True:
        t0 = time.perf_counter()
        try:
            order(item, f"b{job.worker}-{n % MEMBERS_PER_WORKER}")
        except ClearingError as error:
            refused[error.code] += 1
            if error.code == "out_of_stock" or sum(refused.values()) >= 100:
                break
        else:
            confirmed += 1
            last = time.perf_counter()
        finally:
            order_seconds += time.perf_counter() - t0
            n += 1
    queue.put(
        Result(
            confirmed,
            start,
            last,
            time.process_time() - cpu,
            _proc_cpu(backend) - server,
            refused,
            parts,
            order_seconds,
            _busy_share(busy, start, time.perf_counter()),
        )
    )
    engine.dispose()


# phases --------------------------------------------------------------------------------------


class WaitSampler:
    """Samples the wait events of the database's other backends every `interval` seconds."""

    def __init__(self, url: str, interval: float = 0.02) -> None:
        self.url = url
        self.interval = interval
        self.samples: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        engine = create_engine(
            make_url(self.url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
        )
        query = text(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        with engine.connect() as conn:
            while not self._stop.wait(self.interval):
                for state, kind, event in conn.execute(query):
                    self.samples[wait_label(state, kind, event)] += 1
        engine.dispose()


def wait_label(state: str | None, kind: str | None, event: str | None) -> str:
    """One sampled backend as a label: `cpu` when active and not waiting, `idle` between the
    statements of a worker (the client's own time), else the wait's type and event."""
    if state == "active" and kind is None:
        return "cpu"
    if state is not None and state.startswith("idle") and kind in (None, "Client"):
        return "idle"
    return f"{kind}:{event}"


def shares(samples: Counter[str], top: int = 6) -> dict[str, float]:
    """The most frequent labels and their share of all samples, largest first."""
    total = sum(samples.values())
    if total == 0:
        return {}
    return {label: round(n / total, 3) for label, n in samples.most_common(top)}


def own_share(results: list[Result], elapsed: float) -> float:
    """The share of the machine's CPUs the bench's workers and their backends used (below the
    machine's busy share: something else ran on the machine at the same time)."""
    used = sum(r.client_cpu + r.server_cpu for r in results)
    return used / (elapsed * (os.cpu_count() or 1))


def run_phase(conf: Setup, workers: int, target: Callable[..., None], job: Job) -> list[Result]:
    """`workers` processes running `target`, started together behind a barrier."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    ready = ctx.Barrier(workers)
    procs = [
        ctx.Process(
            target=target,
            args=(
                Job(conf, w, job.seconds, job.item, job.warm_item),
                ready,
                queue,
            ),
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    results: list[Result] = []
    while len(results) < workers:
        try:
            results.append(queue.get(timeout=1))
        except Empty:
            # A worker that died leaves the others waiting at the barrier: stop them all.
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.terminate()
                raise RuntimeError("a worker failed (its traceback is above)") from None
    for p in procs:
        p.join()
    return results


def checkout_round(conf: Setup, workers: int, seconds: float) -> dict[str, Any]:
    """The reference: checkout operations per second, and what they cost."""
    with WaitSampler(conf.url) as sampler:
        results = run_phase(conf, workers, _checkout_worker, Job(conf, 0, seconds, "", ""))
    ops = sum(r.ops for r in results)
    elapsed = max(r.end for r in results) - min(r.start for r in results)
    return {
        "ops_per_s": ops / elapsed,
        "ops": ops,
        "client_cpu_ms_per_op": sum(r.client_cpu for r in results) / ops * 1000,
        "server_cpu_ms_per_op": sum(r.server_cpu for r in results) / ops * 1000,
        "waits": shares(sampler.samples),
        "machine_busy": statistics.mean(r.busy for r in results),
        "own_cpu_share": own_share(results, elapsed),
    }


def _buyers_points(url: str) -> int:
    """The mall buyers' points, all together."""
    from sqlalchemy import func, select

    from clearing.core.db import make_engine, transaction
    from clearing.core.models import Balance
    from issuers.models import Member

    engine = make_engine(url, pool_size=1, max_overflow=0)
    with transaction(engine) as s:
        found = s.execute(
            select(func.coalesce(func.sum(Balance.balance), 0))
            .join(Member, Member.account_id == Balance.account_id)
            .where(Member.external_id.like("b%"))
        ).scalar_one()
    engine.dispose()
    return int(found)


def _item_state(url: str, item: uuid.UUID) -> tuple[int, int, int, int]:
    """The item's stock left, its orders and their points, and holds open in the database."""
    from sqlalchemy import func, select

    from clearing.core.db import make_engine, transaction
    from clearing.core.models import Hold
    from exchange.mall import repository
    from exchange.mall.models import MallOrder

    engine = make_engine(url, pool_size=1, max_overflow=0)
    with transaction(engine) as s:
        left = repository.stocks_left(s, [item]).get(item, 0)
        placed, points = s.execute(
            select(func.count(), func.coalesce(func.sum(MallOrder.points), 0)).where(
                MallOrder.item_id == item
            )
        ).one()
        held = s.execute(
            select(func.count()).select_from(Hold).where(Hold.status == "authorised")
        ).scalar_one()
    engine.dispose()
    return left, int(placed), int(points), int(held)


def mall_round(conf: Setup, workers: int) -> dict[str, Any]:
    """One sell-out of a fresh item with STOCK units: orders confirmed per second, and checks."""
    item = _hot_item(conf.url, conf.supplier, STOCK)
    # The warm-up's own item, so that the orders' statements are prepared before the clock.
    warm = _hot_item(conf.url, conf.supplier, 10**6)
    before = _buyers_points(conf.url)
    with WaitSampler(conf.url) as sampler:
        results = run_phase(conf, workers, _mall_worker, Job(conf, 0, 0, str(item), str(warm)))
    debited = before - _buyers_points(conf.url)
    left, placed, order_points, held = _item_state(conf.url, item)
    confirmed = sum(r.ops for r in results)
    refused: Counter[str] = Counter()
    for r in results:
        refused.update(r.refused)
    elapsed = max(r.end for r in results) - min(r.start for r in results)
    order_time = sum(r.order_seconds for r in results)
    parts = {name: sum(r.parts[name] for r in results) / order_time for name in PARTS}
    parts["rest"] = 1 - sum(parts.values())
    return {
        "ops_per_s": confirmed / elapsed,
        "sell_out_s": elapsed,
        "confirmed": confirmed,
        "refused": dict(refused),
        "stock_left": left,
        "orders_written": placed,
        "points_debited": debited,
        "order_points": order_points,
        "holds_open": held,
        "client_cpu_ms_per_op": sum(r.client_cpu for r in results) / confirmed * 1000,
        "server_cpu_ms_per_op": sum(r.server_cpu for r in results) / confirmed * 1000,
        "order_ms": order_time / (confirmed + sum(refused.values())) * 1000,
        "parts": {k: round(v, 3) for k, v in parts.items()},
        "waits": shares(sampler.samples),
        "machine_busy": statistics.mean(r.busy for r in results),
        "own_cpu_share": own_share(results, elapsed),
    }


def failures(round_: dict[str, Any], stock: int = STOCK, price: int = PRICE) -> list[str]:
    """What a sell-out round got wrong (empty: all held)."""
    found = []
    if round_["confirmed"] != stock:
        found.append(f"confirmed {round_['confirmed']} != stock {stock}")
    if round_["orders_written"] != round_["confirmed"]:
        found.append(f"orders written {round_['orders_written']} != {round_['confirmed']}")
    if round_["stock_left"] != 0:
        found.append(f"stock left {round_['stock_left']}")
    for key in ("points_debited", "order_points"):
        if round_[key] != stock * price:
            found.append(f"{key} {round_[key]} != {stock * price}")
    if round_["holds_open"] != 0:
        found.append(f"holds open {round_['holds_open']}")
    if set(round_["refused"]) - {"out_of_stock"}:
        found.append(f"refused other than out_of_stock: {round_['refused']}")
    return found


def schedule(rounds: int) -> list[str]:
    """The phases in order: ref, mall, then mall, ref, and so on (ABBA)."""
    order: list[str] = []
    for r in range(rounds):
        order += ["ref", "mall"] if r % 2 == 0 else ["mall", "ref"]
    return order


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose rate is the median one (the lower of the two middle ones, for an even
    count), so that its other figures come from the same run."""
    ranked = sorted(rounds, key=lambda r: r["ops_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def main() -> None:
    """Run the benchmark; print a table, then one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    name = f"mall_bench_{os.getpid()}"
    url = _create_db(name)
    ref: list[dict[str, Any]] = []
    mall: list[dict[str, Any]] = []
    try:
        conf = setup(url, args.workers)
        for phase in schedule(args.rounds):
            if phase == "ref":
                ref.append(checkout_round(conf, args.workers, args.seconds))
            else:
                mall.append(mall_round(conf, args.workers))
        from clearing.core.check import check_ledger
        from clearing.core.db import make_engine, transaction

        engine = make_engine(url)
        with transaction(engine) as s:
            errors = check_ledger(s)
        engine.dispose()
    finally:
        _drop_db(name)
    ref_ops = statistics.median(r["ops_per_s"] for r in ref)
    mall_ops = statistics.median(r["ops_per_s"] for r in mall)
    ratio = mall_ops / ref_ops
    wrong = [f"round {n + 1}: {f}" for n, r in enumerate(mall) for f in failures(r)]
    wrong += [f"ledger check: {e}" for e in errors]
    typical_ref, typical_mall = median_round(ref), median_round(mall)
    figures = {
        "workers": args.workers,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "stock": STOCK,
        "price_points": PRICE,
        "checkout_ops_per_s": round(ref_ops, 1),
        "checkout_ops_per_s_rounds": [round(r["ops_per_s"], 1) for r in ref],
        "mall_orders_per_s": round(mall_ops, 1),
        "mall_orders_per_s_rounds": [round(r["ops_per_s"], 1) for r in mall],
        "sell_out_s_rounds": [round(r["sell_out_s"], 3) for r in mall],
        "ratio": round(ratio, 3),
        "target": TARGET,
        "confirmed": [r["confirmed"] for r in mall],
        "refused": [sum(r["refused"].values()) for r in mall],
        "stock_left": [r["stock_left"] for r in mall],
        "points_debited": [r["points_debited"] for r in mall],
        "holds_open": [r["holds_open"] for r in mall],
        "ledger_check_errors": len(errors),
        "checks_failed": wrong,
        "cpu_ms_per_op": {
            f"{phase}_{side}": round(d[f"{side}_cpu_ms_per_op"], 3)
            for phase, d in (("checkout", typical_ref), ("order", typical_mall))
            for side in ("client", "server")
        },
        "order_ms": round(typical_mall["order_ms"], 2),
        "order_parts": typical_mall["parts"],
        "waits": {"checkout": typical_ref["waits"], "order": typical_mall["waits"]},
        "machine_busy_rounds": {
            "checkout": [round(r["machine_busy"], 3) for r in ref],
            "order": [round(r["machine_busy"], 3) for r in mall],
        },
        "own_cpu_share_rounds": {
            "checkout": [round(r["own_cpu_share"], 3) for r in ref],
            "order": [round(r["own_cpu_share"], 3) for r in mall],
        },
        "met": ratio >= TARGET and not wrong,
    }
    print(f"{'figure':<34}{'value':>12}{'ratio':>9}{'target':>9}")
    print(f"{'checkout single ops/s (median)':<34}{ref_ops:>12.1f}")
    print(f"{'mall orders/s (median)':<34}{mall_ops:>12.1f}{ratio:>9.3f}{'>=0.5':>9}")
    for n, r in enumerate(mall):
        print(
            f"{f'  round {n + 1}: sold out in s':<34}{r['sell_out_s']:>12.3f}"
            f"   confirmed {r['confirmed']}, refused {sum(r['refused'].values())}, "
            f"stock left {r['stock_left']}, debited {r['points_debited']}"
        )
    print(f"{'CPU ms per op':<34}{'client':>12}{'server':>9}{'busy':>9}{'own':>9}")
    for label, d in (("  checkout op", typical_ref), ("  mall order", typical_mall)):
        print(
            f"{label:<34}{d['client_cpu_ms_per_op']:>12.3f}{d['server_cpu_ms_per_op']:>9.3f}"
            f"{d['machine_busy']:>9.2f}{d['own_cpu_share']:>9.2f}"
        )
    print(f"{'mall order ms (wall, per worker)':<34}{typical_mall['order_ms']:>12.2f}")
    for part, share in typical_mall["parts"].items():
        print(f"{f'  share: {part}':<34}{share:>12.3f}")
    for phase, d in (("checkout", typical_ref), ("order", typical_mall)):
        waits = ", ".join(f"{k} {v:.2f}" for k, v in d["waits"].items())
        print(f"{f'backends ({phase})':<34}{waits}")
    print(f"{'ledger check errors':<34}{len(errors):>12}")
    print(f"{'checks':<34}{'all held' if not wrong else '; '.join(wrong):>12}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
