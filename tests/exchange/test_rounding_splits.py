"""No split beats the whole: every rounding goes against the party that chooses how to split.

The pure properties run on `clearing.core.money` with thousands of examples; the same properties then
run through the real services on both databases, where a funder's lines, a merchant's checkouts,
captures and refunds, an issuer's conversions and reversals are posted and read back.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from clearing.core import money
from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.models import Obligation
from clearing.web.context import Caller
from exchange import service as exchange
from exchange.schemas import (
    CaptureCreate,
    CheckoutCreate,
    CheckoutOut,
    ConversionCreate,
    ConversionOut,
    QuoteCreate,
    RefundCreate,
)
from issuers import accruals, members, programs, tokens
from issuers.schemas import (
    AccrualBatchCreate,
    AccrualCreate,
    AccrualOut,
    AccrualReversalCreate,
    LinkTokenCreate,
    MemberCreate,
    MemberLinkCreate,
    MerchantTermSet,
    PaymentTokenCreate,
    ProgramCreate,
)
from tests.factories import T0, TOKEN_SECRET, World, build_world, key

PURE_EXAMPLES = int(os.environ.get("CLEARING_SPLIT_EXAMPLES_PURE", "2000"))
DB_EXAMPLES = int(os.environ.get("CLEARING_SPLIT_EXAMPLES_DB", "1000"))
CONVERSION_EXAMPLES = DB_EXAMPLES // 2

point_values = st.decimals(
    min_value=Decimal("0.0001"), max_value=Decimal("20"), places=4, allow_nan=False
)
fee_rates = st.decimals(min_value=Decimal(0), max_value=Decimal("0.2"), places=5, allow_nan=False)
currencies = st.sampled_from(["CNY", "JPY", "KWD"])  # exponents 2, 0 and 3


def splits(total: int, cuts: list[int]) -> list[int]:
    """`total` cut into positive parts at the given positions (duplicates and ends ignored)."""
    marks = sorted({c for c in cuts if 0 < c < total})
    bounds = [0, *marks, total]
    return [b - a for a, b in itertools.pairwise(bounds)]


def split_of(total: st.SearchStrategy[int]) -> st.SearchStrategy[tuple[int, list[int]]]:
    """A total and a split of it into 1..20 positive parts."""
    return total.flatmap(
        lambda t: st.tuples(
            st.just(t),
            st.lists(st.integers(1, max(1, t - 1)), max_size=19).map(lambda c: splits(t, c)),
        )
    )


def exact_minor(points: int, value: Decimal, currency: str) -> Decimal:
    return Decimal(points) * value.scaleb(money.exponent(currency))


# pure properties -------------------------------------------------------------------------------


@settings(max_examples=PURE_EXAMPLES, deadline=None)
@given(split_of(st.integers(1, 10**9)), point_values, currencies)
def test_a_funder_never_owes_less_for_lines_than_for_the_whole(
    split: tuple[int, list[int]], value: Decimal, currency: str
) -> None:
    total, parts = split
    whole = money.value_owed_for_points(total, value, currency)
    lines = [money.value_owed_for_points(p, value, currency) for p in parts]
    assert whole >= exact_minor(total, value, currency)
    assert all(owed >= 1 for owed in lines)  # no line creates points for nothing
    assert sum(lines) >= whole


@settings(max_examples=PURE_EXAMPLES, deadline=None)
@given(split_of(st.integers(1, 10**9)), fee_rates)
def test_a_fee_payer_never_pays_less_for_parts_than_for_the_whole(
    split: tuple[int, list[int]], rate: Decimal
) -> None:
    total, parts = split
    whole = money.fee(total, rate)
    assert whole >= total * rate
    assert sum(money.fee(p, rate) for p in parts) >= whole


@settings(max_examples=PURE_EXAMPLES, deadline=None)
@given(split_of(st.integers(1, 10**9)), point_values, currencies)
def test_a_spender_never_pays_fewer_points_for_parts_than_for_the_whole(
    split: tuple[int, list[int]], value: Decimal, currency: str
) -> None:
    total, parts = split
    whole = money.points_for_amount(total, value, currency)
    assert exact_minor(whole, value, currency) >= total  # the points cover the amount
    assert sum(money.points_for_amount(p, value, currency) for p in parts) >= whole


@settings(max_examples=PURE_EXAMPLES, deadline=None)
@given(split_of(st.integers(1, 10**9)), point_values, point_values, fee_rates, currencies)
def test_a_converting_member_never_gains_by_splitting(
    split: tuple[int, list[int]], a: Decimal, b: Decimal, rate: Decimal, currency: str
) -> None:
    total, parts = split
    whole_in = money.converted_points(total, a, b, rate)
    parts_in = [money.converted_points(p, a, b, rate) for p in parts]
    assert sum(parts_in) <= whole_in
    # what B receives covers what it creates, and the member never gets more than it gave up
    assert exact_minor(whole_in, b, currency) <= exact_minor(total, a, currency) * (1 - rate)
    fees = [money.conversion_fee(p, a, rate, currency) for p in parts]
    assert sum(fees) >= money.conversion_fee(total, a, rate, currency)


@settings(max_examples=PURE_EXAMPLES, deadline=None)
@given(st.integers(0, 10**9), split_of(st.integers(1, 10**6)))
def test_cumulative_shares_give_back_exactly_the_whole_whatever_the_steps(
    taken: int, split: tuple[int, list[int]]
) -> None:
    whole, steps = split
    given_back, done = 0, 0
    for step in steps:
        before = money.cumulative_share(taken, done, whole)
        done += step
        given_back += money.cumulative_share(taken, done, whole) - before
        # path-independent: what has come back depends only on how much was refunded so far
        assert given_back == taken * done // whole
    assert given_back == taken


def test_amounts_beyond_one_operation_are_refused_not_wrapped() -> None:
    big = money.MAX_AMOUNT
    assert money.value_owed_for_points(big, Decimal("0.01"), "CNY") == big
    beyond: list[Callable[[], int]] = [
        lambda: money.value_owed_for_points(big, Decimal("0.02"), "CNY"),
        lambda: money.points_for_amount(big, Decimal("0.001"), "CNY"),
        lambda: money.converted_points(big, Decimal(2), Decimal(1), Decimal(0)),
        lambda: money.blocks_converted(big, 1, 2),
    ]
    for make in beyond:
        with pytest.raises(money.AmountOutOfRange) as error:
            make()
        assert (error.value.code, error.value.status) == ("amount_out_of_range", 422)


# the same properties through the services, on both databases ------------------------------------


class _Rollback(Exception):
    """Ends an example: its writes are checked, then rolled back, so every example starts alike."""


class Day:
    """A world, and per example one transaction with a fresh program, members and merchant term."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.world: World = build_world(engine)
        self.serial = itertools.count()
        self.session: Session

    @contextmanager
    def example(self) -> Iterator[Day]:
        with suppress(_Rollback), transaction(self.engine) as session:
            self.session = session
            yield self
            assert check_ledger(session) == []
            raise _Rollback

    def program(self, value: Decimal, fee_rate: Decimal) -> str:
        code = f"P{next(self.serial)}"
        programs.create_program(
            self.session,
            self.world.bank_a,
            ProgramCreate(code=code, name=code, point_value=value),
            T0,
        )
        programs.set_merchant_term(
            self.session, self.world.shop.org_id, MerchantTermSet(program=code, fee_rate=fee_rate)
        )
        return code

    def member(self, issuer: Caller, code: str) -> str:
        external_id = f"m{next(self.serial)}"
        members.create_member(self.session, issuer, code, MemberCreate(external_id=external_id), T0)
        return external_id

    def accrue(self, funder: Caller, code: str, external_id: str, points: int) -> AccrualOut:
        out, _ = accruals.accrue(
            self.session,
            funder,
            AccrualCreate(program=code, external_id=external_id, points=points),
            T0,
            key(),
        )
        return out

    def checkout(self, code: str, external_id: str, amount: int, over: int = 0) -> CheckoutOut:
        """The shop captures `amount` minor units of points, of `amount + over` authorised."""
        shop = self.world.shop
        authorised = amount + over
        token, _ = tokens.mint_payment_token(
            self.session,
            self.world.bank_a,
            code,
            external_id,
            PaymentTokenCreate(),
            T0,
            key(),
            TOKEN_SECRET,
        )
        auth, _ = exchange.authorise(
            self.session,
            shop,
            CheckoutCreate(
                program=code,
                external_id=external_id,
                order_total=authorised,
                points_amount=authorised,
                payment_token=token.token,
            ),
            T0,
            key(),
        )
        capture = CaptureCreate(amount=amount if over else None)
        out, _ = exchange.capture(self.session, shop, auth.id, capture, T0, key())
        return out

    def convert(
        self, source: tuple[str, str], target: tuple[str, str], points: int
    ) -> ConversionOut:
        target_issuer = self.world.programs[target[0]]
        token, _ = tokens.mint_link_token(
            self.session,
            self.world.bank_a,
            source[0],
            source[1],
            LinkTokenCreate(),
            T0,
            key(),
            TOKEN_SECRET,
        )
        tokens.link_members(
            self.session,
            target_issuer,
            MemberLinkCreate(
                source_program=source[0],
                source_external_id=source[1],
                target_program=target[0],
                target_external_id=target[1],
                link_token=token.token,
            ),
            T0,
        )
        return self.convert_linked(source, target, points)

    def convert_linked(
        self, source: tuple[str, str], target: tuple[str, str], points: int
    ) -> ConversionOut:
        bank_a = self.world.bank_a
        quote = exchange.quote_conversion(
            self.session,
            bank_a,
            QuoteCreate(
                source_program=source[0],
                source_external_id=source[1],
                target_program=target[0],
                target_external_id=target[1],
                points=points,
            ),
            T0,
        )
        out, _ = exchange.convert(
            self.session, bank_a, ConversionCreate(quote_id=quote.id), T0, key()
        )
        return out


def db_settings(examples: int = DB_EXAMPLES) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )


def test_no_split_of_accruals_reversals_checkouts_or_refunds_beats_the_whole(
    engine: Engine,
) -> None:
    day = Day(engine)
    shop = day.world.shop

    @db_settings()
    @given(
        value=point_values,
        fee_rate=fee_rates,
        accrual=split_of(st.integers(1, 20_000)),
        spend=split_of(st.one_of(st.integers(1, 40), st.integers(1, 20_000))),
        steps=st.lists(st.integers(1, 50), min_size=1, max_size=20),
        one_fen_refunds=st.booleans(),
        over=st.sampled_from([0, 0, 1, 7]),
    )
    def check(
        value: Decimal,
        fee_rate: Decimal,
        accrual: tuple[int, list[int]],
        spend: tuple[int, list[int]],
        steps: list[int],
        one_fen_refunds: bool,
        over: int,
    ) -> None:
        with day.example() as d:
            code = d.program(value, fee_rate)
            whole_member, split_member = (
                d.member(d.world.bank_a, code),
                d.member(d.world.bank_a, code),
            )
            points, lines = accrual

            # accruals the shop funds: one accrual against the same points as a file of lines
            whole = d.accrue(shop, code, whole_member, points)
            file, _ = accruals.accrue_batch(
                d.session,
                shop,
                AccrualBatchCreate(
                    items=[
                        AccrualCreate(program=code, external_id=split_member, points=p)
                        for p in lines
                    ]
                ),
                T0,
                key(),
            )
            assert whole.amount_owed >= exact_minor(points, value, "CNY")
            assert file.amount_owed >= whole.amount_owed

            # checkouts: the whole amount at once, then the same amount as many checkouts
            amount, parts = spend
            if money.points_for_amount(amount, value, "CNY") > points:
                return
            single = d.checkout(code, whole_member, amount)
            # each piece a partial capture of a larger authorisation when `over` is drawn
            if sum(money.points_for_amount(p + over, value, "CNY") for p in parts) <= points:
                pieces = [d.checkout(code, split_member, p, over) for p in parts]
                assert sum(p.captured_points for p in pieces) >= single.captured_points
                assert sum(p.fee_amount for p in pieces) >= single.fee_amount
                assert sum(p.captured_amount for p in pieces) == single.captured_amount

            # refunds of the whole checkout in the shop's steps: never more back than the share
            # refunded so far, and exactly the fee and points taken once all is refunded
            refunded = points_back = fee_back = 0
            for step in itertools.chain(
                [1] * amount if one_fen_refunds and amount <= 40 else steps, [amount]
            ):
                step = min(step, amount - refunded)
                if step == 0:
                    break
                out, _ = exchange.refund(
                    d.session, shop, single.id, RefundCreate(amount=step), T0, key()
                )
                refunded += step
                points_back += out.points
                fee_back += out.fee_returned
                assert points_back * amount <= single.captured_points * refunded
                assert fee_back * amount <= single.fee_amount * refunded
            assert (points_back, fee_back) == (single.captured_points, single.fee_amount)

            # reversals of the whole accrual in steps: back exactly what was owed at the end
            returned = reversed_points = 0
            for step in itertools.chain(steps, [points]):
                step = min(step, points - reversed_points)
                if step == 0:
                    break
                rev, _ = accruals.reverse_accrual(
                    d.session, shop, whole.id, AccrualReversalCreate(points=step), T0, key()
                )
                reversed_points += step
                returned += rev.amount_returned
                # the points still credited are always paid for, rounded against the shop
                assert whole.amount_owed - returned >= exact_minor(
                    points - reversed_points, value, "CNY"
                )
            assert returned == whole.amount_owed
            assert (
                d.session.execute(
                    select(func.count()).select_from(Obligation).where(Obligation.amount <= 0)
                ).scalar_one()
                == 0
            )

    check()


def test_no_split_of_a_conversion_beats_the_whole(engine: Engine) -> None:
    day = Day(engine)
    fee_rate = Decimal("0.01")  # the world's platform conversion fee

    @db_settings(CONVERSION_EXAMPLES)
    @given(
        value=point_values,
        target=st.sampled_from(["BANKB", "MOBILE"]),
        conversion=split_of(st.integers(1, 20_000)),
    )
    def check(value: Decimal, target: str, conversion: tuple[int, list[int]]) -> None:
        with day.example() as d:
            points, parts = conversion
            target_value = Decimal("0.01") if target == "BANKB" else Decimal("0.002")
            if money.converted_points(points, value, target_value, fee_rate) == 0:
                return
            code = d.program(value, Decimal(0))
            issuer = d.world.programs[target]
            ends = []
            for _ in range(2):
                source = d.member(d.world.bank_a, code)
                d.accrue(d.world.bank_a, code, source, points)
                ends.append(((code, source), (target, d.member(issuer, target))))
            whole = d.convert(*ends[0], points)
            converting = [
                p for p in parts if money.converted_points(p, value, target_value, fee_rate)
            ]
            pieces = [d.convert(*ends[1], converting[0])] if converting else []
            pieces += [d.convert_linked(*ends[1], p) for p in converting[1:]]
            assert sum(p.points_in for p in pieces) <= whole.points_in
            # bank A pays for what it creates in B and the platform's fee, rounded against it
            assert whole.settlement_amount >= exact_minor(whole.points_in, target_value, "CNY")
            assert sum(p.settlement_amount for p in pieces) >= money.value_owed_for_points(
                sum(p.points_in for p in pieces), target_value, "CNY"
            )
            assert sum(p.fee_amount for p in pieces) >= money.conversion_fee(
                sum(p.points_out for p in pieces), value, fee_rate, "CNY"
            )

    check()
