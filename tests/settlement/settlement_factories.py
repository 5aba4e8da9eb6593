"""Factories and hypothesis strategies for settlement tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import strategies as st

from clearing.core.kinds import OrgKind
from settlement.lines import ObligationLine, Party
from settlement.statement import StatementMeta

PLATFORM = Party("platform", "Points Clearing Platform", OrgKind.PLATFORM, "CNY")
ISSUERS = ("bank-a", "bank-b", "carrier-c")
MERCHANTS = ("shop-x", "=shop-y")  # the "=" checks that names never become formulas
WINDOW_START = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(days=1)


def party(org: str, currency: str = "CNY") -> Party:
    """The display descriptor of a test organisation."""
    if org == PLATFORM.id:
        return Party(PLATFORM.id, PLATFORM.name, OrgKind.PLATFORM, currency)
    if org in MERCHANTS:
        return Party(org, f"{org.upper()}, Co.", OrgKind.MERCHANT, currency)
    return Party(org, f"{org.upper()}, Co.", OrgKind.ISSUER, currency)


def meta(currency: str = "CNY", sequence: int = 42) -> StatementMeta:
    """Statement header values of the test batch."""
    return StatementMeta(
        batch_id="batch-20260302-" + currency,
        settlement_date=date(2026, 3, 2),
        window_start=WINDOW_START,
        window_end=WINDOW_END,
        zone="Asia/Shanghai",
        currency=currency,
        generated_at=datetime(2026, 3, 2, 17, 5, tzinfo=UTC),
        sequence=sequence,
        previous_file_id=f"ST-{currency}-20260301-x-{sequence - 1:06d}",
    )


def line(
    reference: str,
    seq: int,
    event_type: str,
    payer: str,
    payee: str,
    amount: int,
    *,
    currency: str = "CNY",
    original: str | None = None,
    minute: int = 0,
    points: int | None = 100,
) -> ObligationLine:
    """One obligation line booked `minute` minutes into the test window."""
    return ObligationLine(
        reference=reference,
        seq=seq,
        original_reference=original,
        event_type=event_type,
        payer=payer,
        payee=payee,
        currency=currency,
        amount=amount,
        program="PRG-A" if points else None,
        points=points,
        point_value=Decimal("0.005") if points else None,
        point_value_version=2 if points else None,
        booked_at=WINDOW_START + timedelta(minutes=minute, microseconds=seq),
    )


@st.composite
def days(
    draw: st.DrawFn, currencies: tuple[str, ...] = ("CNY", "HKD", "JPY")
) -> list[ObligationLine]:
    """A business day of transactions with their fees and refunds, sorted as the ledger sends."""
    out: list[ObligationLine] = []
    captures: list[tuple[str, str, str, str, int]] = []
    count = draw(st.integers(min_value=0, max_value=25))
    amounts = st.integers(min_value=1, max_value=10**9)
    for n in range(count):
        ref = f"{n + 1:032x}"
        cur = draw(st.sampled_from(currencies))
        kind = draw(st.sampled_from(["checkout", "conversion", "accrual", "reversal", "refund"]))
        issuer = draw(st.sampled_from(ISSUERS))
        merchant = draw(st.sampled_from(MERCHANTS))
        amount = draw(amounts)
        fee = draw(st.integers(min_value=0, max_value=amount))
        points = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=10**7)))
        if kind == "refund" and captures:
            orig, c_cur, c_issuer, c_merchant, c_amount = draw(st.sampled_from(captures))
            part = draw(st.integers(min_value=1, max_value=c_amount))
            out.append(
                line(
                    ref,
                    0,
                    "checkout_refund",
                    c_merchant,
                    c_issuer,
                    part,
                    original=orig,
                    currency=c_cur,
                    minute=n,
                    points=points,
                )
            )
            if fee:
                out.append(
                    line(
                        ref,
                        1,
                        "fee_refund",
                        PLATFORM.id,
                        c_merchant,
                        fee,
                        original=orig,
                        currency=c_cur,
                        minute=n,
                        points=None,
                    )
                )
            continue
        if kind in ("checkout", "refund"):
            out.append(
                line(
                    ref,
                    0,
                    "checkout_capture",
                    issuer,
                    merchant,
                    amount,
                    points=points,
                    currency=cur,
                    minute=n,
                )
            )
            captures.append((ref, cur, issuer, merchant, amount))
            payer_of_fee = merchant
        elif kind == "conversion":
            other = draw(st.sampled_from([i for i in ISSUERS if i != issuer]))
            out.append(
                line(
                    ref,
                    0,
                    "conversion",
                    issuer,
                    other,
                    amount,
                    points=points,
                    currency=cur,
                    minute=n,
                )
            )
            payer_of_fee = issuer
        elif kind == "accrual":
            out.append(
                line(
                    ref,
                    0,
                    "merchant_funded_accrual",
                    merchant,
                    issuer,
                    amount,
                    points=points,
                    currency=cur,
                    minute=n,
                )
            )
            payer_of_fee = merchant
        else:
            out.append(
                line(
                    ref,
                    0,
                    "accrual_reversal",
                    issuer,
                    merchant,
                    amount,
                    original=f"{n:032x}",
                    points=points,
                    currency=cur,
                    minute=n,
                )
            )
            continue
        if fee:
            out.append(
                line(
                    ref,
                    1,
                    "fee",
                    payer_of_fee,
                    PLATFORM.id,
                    fee,
                    points=None,
                    currency=cur,
                    minute=n,
                )
            )
    return out


def chunked(lines: list[ObligationLine], size: int) -> Iterable[list[ObligationLine]]:
    """`lines` in chunks of `size`."""
    for start in range(0, len(lines), size):
        yield lines[start : start + size]


def orgs_of(lines: Iterable[ObligationLine]) -> list[str]:
    """Every organisation named by `lines`, sorted."""
    return sorted({o for ln in lines for o in (ln.payer, ln.payee)})
