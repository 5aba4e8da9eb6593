"""Generated business days booked in the real ledger and settled through the real DB path.

Each example books one more day into the same database and settles it; whatever was drawn,
positions sum to zero, the platform nets exactly its fee income, the batch totals are the
ledger's, every folder verifies, and the batches' windows together hold every obligation once.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from clearing.core.db import transaction
from clearing.core.kinds import EntryKind, ObligationEvent
from clearing.core.ledger import EntryDraft, Ledger, ObligationDraft
from clearing.core.models import Obligation
from clearing.core.timeutil import business_window
from clearing.web.platform_key import load_or_create
from settlement.service import run_batch, verify_tree
from tests.factories import T0, World, build_world
from tests.settlement.settlement_world import DAY1, settlement_settings

KINDS = ("conversion", "checkout", "accrual", "refund")
transactions = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=0, max_value=1),
        st.integers(min_value=1, max_value=10**9),
        st.integers(min_value=0, max_value=10**6),
        st.integers(min_value=0, max_value=86_399),
    ),
    max_size=15,
)


def book(
    engine: Engine, w: World, day_index: int, drawn: list[tuple[str, int, int, int, int, int]]
) -> None:
    issuers = [w.bank_a, w.bank_b, w.carrier]
    merchants = [w.shop, w.cafe]
    start, _ = business_window(DAY1 + timedelta(days=day_index), "Asia/Shanghai", "00:00")
    with transaction(engine) as session:
        ledger = Ledger(session)
        for kind, i, m, amount, fee, second in drawn:
            issuer, merchant = issuers[i], merchants[m]
            if kind == "conversion":
                other = issuers[(i + 1) % 3]
                main = ObligationDraft(
                    ObligationEvent.CONVERSION, issuer.org_id, other.org_id, "CNY", amount
                )
                fee_payer = issuer
            elif kind == "checkout":
                main = ObligationDraft(
                    ObligationEvent.CHECKOUT_CAPTURE,
                    issuer.org_id,
                    merchant.org_id,
                    "CNY",
                    amount,
                    "BANKA",
                    7,
                )
                fee_payer = merchant
            elif kind == "accrual":
                main = ObligationDraft(
                    ObligationEvent.MERCHANT_FUNDED_ACCRUAL,
                    merchant.org_id,
                    issuer.org_id,
                    "CNY",
                    amount,
                )
                fee_payer = merchant
            else:
                main = ObligationDraft(
                    ObligationEvent.CHECKOUT_REFUND, merchant.org_id, issuer.org_id, "CNY", amount
                )
                fee_payer = None
            obligations = [main]
            if fee and fee_payer is not None:
                obligations.append(
                    ObligationDraft(
                        ObligationEvent.FEE, fee_payer.org_id, w.platform.org_id, "CNY", fee
                    )
                )
            elif fee:
                obligations.append(
                    ObligationDraft(
                        ObligationEvent.FEE_REFUND, w.platform.org_id, merchant.org_id, "CNY", fee
                    )
                )
            ledger.post(
                EntryDraft(
                    kind=EntryKind.ACCRUAL,
                    org_id=issuer.org_id,
                    booked_at=start + timedelta(seconds=second),
                    legs=[],
                    obligations=obligations,
                )
            )


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_generated_days_settle_with_every_invariant(
    db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from clearing.core.db import make_engine

    url = str(request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url"))
    engine = make_engine(url)
    conf = settlement_settings(url, tmp_path)
    w = build_world(engine, T0 - timedelta(days=2))
    public = load_or_create(conf.platform_key_path).public_key
    counter = itertools.count()
    settled: list[tuple[int, int]] = []

    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(drawn=transactions)
    def one_day(drawn: list[tuple[str, int, int, int, int, int]]) -> None:
        n = next(counter)
        day = DAY1 + timedelta(days=n)
        book(engine, w, n, drawn)
        _, end = business_window(day, conf.zone, conf.cutoff)
        batch = run_batch(engine, day, "CNY", end + timedelta(hours=1), conf)
        assert batch.state == "published"
        assert batch.line_count == len(drawn) + sum(1 for t in drawn if t[4])
        assert sum(p.net for p in batch.positions) == 0
        fees = sum(t[4] for t in drawn if t[0] != "refund") - sum(
            t[4] for t in drawn if t[0] == "refund"
        )
        assert batch.fee_income == fees
        platform = next(p for p in batch.positions if p.party_kind == "platform")
        assert platform.net == fees
        assert verify_tree(Path(batch.directory), public)[1] == []
        settled.append((batch.line_count or 0, batch.amount_total or 0))

    try:
        one_day()
        with transaction(engine) as session:
            count, amount = session.execute(
                select(func.count(), func.coalesce(func.sum(Obligation.amount), 0))
            ).one()
        assert (sum(c for c, _ in settled), sum(a for _, a in settled)) == (count, amount)
    finally:
        engine.dispose()
