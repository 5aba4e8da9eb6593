"""Clearing and netting: exact, chunk-size independent, and checked by collected invariants."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.lines import ObligationLine
from settlement.netting import Gross, Totals, check_invariants, clear, lines_to_frame
from tests.settlement.settlement_factories import PLATFORM, chunked, days, line


def model(
    lines: list[ObligationLine],
) -> tuple[dict[tuple[str, str, str, str], Gross], dict[tuple[str, str], int]]:
    """Plain-Python gross obligations and positions, the reference for the pandas version."""
    gross: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    positions: dict[tuple[str, str], int] = defaultdict(int)
    for ln in lines:
        acc = gross[(ln.currency, ln.payer, ln.payee, ln.event_type)]
        acc[0] += ln.amount
        acc[1] += 1
        acc[2] += ln.points or 0
        positions[(ln.currency, ln.payee)] += ln.amount
        positions[(ln.currency, ln.payer)] -= ln.amount
    return {k: Gross(*v) for k, v in gross.items()}, dict(positions)


@settings(max_examples=150, deadline=None)
@given(days(), st.integers(min_value=1, max_value=40), st.integers(min_value=1, max_value=40))
def test_chunked_clearing_matches_the_plain_model(
    lines: list[ObligationLine], size_a: int, size_b: int
) -> None:
    a = clear(chunked(lines, size_a))
    b = clear(chunked(lines, size_b))
    gross, positions = model(lines)
    assert dict(a.gross) == gross
    assert dict(a.positions) == positions
    assert a == b
    assert check_invariants(a, platform_id=PLATFORM.id) == []
    for cur in {ln.currency for ln in lines}:
        assert sum(a.currency_positions(cur).values()) == 0
        assert a.input_totals[cur] == Totals(
            sum(ln.amount for ln in lines if ln.currency == cur),
            sum(1 for ln in lines if ln.currency == cur),
            sum(ln.points or 0 for ln in lines if ln.currency == cur),
        )
        fees = sum(ln.amount for ln in lines if ln.currency == cur and ln.event_type == "fee")
        refunds = sum(
            ln.amount for ln in lines if ln.currency == cur and ln.event_type == "fee_refund"
        )
        assert a.fee_income.get(cur, 0) == fees - refunds
    assert a.line_count == len(lines)


@settings(max_examples=30, deadline=None)
@given(days())
def test_frames_and_line_chunks_clear_alike(lines: list[ObligationLine]) -> None:
    frames = [lines_to_frame(chunk) for chunk in chunked(lines, 7)]
    assert clear(frames) == clear(chunked(lines, 7))


def test_amounts_too_large_for_one_int64_sum_stay_exact() -> None:
    big = 2**62
    lines = [
        line(f"{n:032x}", 0, "conversion", "bank-a", "bank-b", big, minute=n) for n in range(6)
    ]
    result = clear([lines])
    assert result.gross[("CNY", "bank-a", "bank-b", "conversion")].amount == 6 * big
    assert result.positions[("CNY", "bank-b")] == 6 * big
    assert check_invariants(result) == []


def test_unknown_currency_is_an_error() -> None:
    lines = [
        line("aa", 0, "conversion", "bank-a", "bank-b", 100, currency="XXQ"),
        line("bb", 0, "conversion", "bank-a", "bank-b", 100, currency="CNY", minute=1),
    ]
    errors = check_invariants(clear([lines]))
    assert any("unknown currency 'XXQ'" in e for e in errors)
    assert not any("'CNY'" in e for e in errors)


def test_a_line_seen_twice_across_chunks_is_reported() -> None:
    a = line("aa", 0, "conversion", "bank-a", "bank-b", 100)
    b = line("bb", 0, "conversion", "bank-b", "bank-a", 40, minute=1)
    errors = check_invariants(clear([[a, b], [a]]))
    assert any("repeat a (reference, seq)" in e for e in errors)
    errors = check_invariants(clear([[a, b, a]]))
    assert any("aa/0" in e for e in errors)


def test_all_broken_invariants_are_collected() -> None:
    lines = [
        line("aa", 0, "conversion", "bank-a", "bank-a", 100),
        line("bb", 0, "teleport", "bank-a", "bank-b", 0, minute=1),
    ]
    errors = check_invariants(
        clear([lines]), expected={"CNY": Totals(amount=999, count=2, points=200)}
    )
    joined = "\n".join(errors)
    assert "payer and payee are the same party" in joined
    assert "event type is not one of EVENT_TYPES" in joined
    assert "amount is not positive" in joined
    assert "ledger control totals" in joined


def test_platform_position_must_equal_fee_income() -> None:
    lines = [
        line("aa", 0, "checkout_capture", "bank-a", "shop-x", 10_000),
        line("aa", 1, "fee", "shop-x", PLATFORM.id, 60),
        line("bb", 0, "conversion", PLATFORM.id, "bank-b", 5, minute=1),
    ]
    result = clear([lines])
    assert result.fee_income == {"CNY": 60}
    errors = check_invariants(result, platform_id=PLATFORM.id)
    assert errors == [f"CNY: platform {PLATFORM.id} nets 55 but fee income is 60"]


def test_empty_day_clears_to_nothing() -> None:
    result = clear([[], pd.DataFrame(lines_to_frame([]))])
    assert result.line_count == 0
    assert not result.positions
    assert check_invariants(result) == []
