"""The no-value-creation rule on rate graphs, checked against an exact brute-force search.

The threshold under test is exact: a cycle is refused iff the exact product of its rates is
greater than 1. A product of exactly 1 is allowed, however its float logs happen to round, and a
gain of 10^-30 per lap is still refused.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk.arbitrage import ArbitrageCycle, _graph, _isolated, value_creating_cycle

Rates = dict[tuple[str, str], Fraction]


def block_rate(source_block: int, target_block: int) -> Fraction:
    """Points of the target per point of the source under a bilateral block rate."""
    return Fraction(target_block, source_block)


def value_rate(source_value: str, target_value: str, fee_rate: str = "0") -> Fraction:
    """Points of the target per point of the source under value-based conversion."""
    source, target, fee = (Fraction(Decimal(x)) for x in (source_value, target_value, fee_rate))
    return source / target * (1 - fee)


def product(rates: Mapping[tuple[str, str], Fraction], programs: tuple[str, ...]) -> Fraction:
    pairs = itertools.pairwise(programs)
    return math.prod((rates[pair] for pair in pairs), start=Fraction(1))


def brute_force_best_gain(rates: Mapping[tuple[str, str], Fraction]) -> Fraction | None:
    """The largest exact product over every simple cycle, found by trying every ordering."""
    programs = sorted({code for pair in rates for code in pair})
    best: Fraction | None = None
    for length in range(2, len(programs) + 1):
        for ordering in itertools.permutations(programs, length):
            if ordering[0] != min(ordering):
                continue  # each cycle once, from its smallest code
            cycle = (*ordering, ordering[0])
            if all(pair in rates for pair in itertools.pairwise(cycle)):
                gain = product(rates, cycle)
                best = gain if best is None or gain > best else best
    return best


def assert_real_cycle(rates: Rates, found: ArbitrageCycle) -> None:
    programs = found.programs
    assert programs[0] == programs[-1]
    assert len(set(programs[:-1])) == len(programs) - 1 >= 2
    assert all(pair in rates for pair in itertools.pairwise(programs))
    assert found.gain == product(rates, programs)
    assert found.gain > 1


def test_issue_example_block_rate_against_value_conversion_is_refused() -> None:
    # A is worth 0.005, B 0.01: a 1:1 block rate A -> B doubles value, and converting back by
    # value gives 2 A per B, so one lap turns 1 A into 2 A.
    rates = {("A", "B"): block_rate(1, 1), ("B", "A"): value_rate("0.01", "0.005")}

    found = value_creating_cycle(rates)

    assert found == ArbitrageCycle(programs=("A", "B", "A"), gain=Fraction(2))
    assert found.description == "A -> B -> A returns 2 points of A per point of A"
    assert found.detail() == {"cycle": ["A", "B", "A"], "gain": "2"}


def test_block_rate_at_the_value_ratio_is_allowed() -> None:
    rates = {("A", "B"): block_rate(2, 1), ("B", "A"): value_rate("0.01", "0.005")}

    assert product(rates, ("A", "B", "A")) == 1
    assert value_creating_cycle(rates) is None


def test_exactly_one_is_allowed_where_float_logs_would_claim_a_gain() -> None:
    # Value-based conversion around three programs multiplies out to exactly 1, but the float
    # sum of -log(rate) is about -8e-17: a float search without tolerance would refuse it.
    values = {"A": "0.7365", "B": "0.7738", "C": "0.622"}
    rates = {
        (s, t): value_rate(values[s], values[t]) for s, t in [("A", "B"), ("B", "C"), ("C", "A")]
    }
    assert sum(-math.log(float(rate)) for rate in rates.values()) < 0
    assert product(rates, ("A", "B", "C", "A")) == 1

    assert value_creating_cycle(rates) is None


def test_a_gain_below_float_resolution_is_refused() -> None:
    tiny = Fraction(1, 10**30)
    rates = {("A", "B"): Fraction(1) + tiny, ("B", "A"): Fraction(1)}
    assert sum(-math.log(float(rate)) for rate in rates.values()) == 0

    found = value_creating_cycle(rates)

    assert found is not None
    assert found.gain == 1 + tiny
    assert found.description.endswith("points of A per point of A")
    assert "about 1 + 1E-30" in found.description


def test_fees_make_a_one_to_one_round_trip_lose() -> None:
    rates = {
        ("A", "B"): value_rate("0.01", "0.01", "0.02"),
        ("B", "A"): value_rate("0.01", "0.01", "0.02"),
    }

    assert value_creating_cycle(rates) is None


def test_fee_smaller_than_the_block_rate_gain_is_still_refused() -> None:
    rates = {("A", "B"): block_rate(100, 103), ("B", "A"): value_rate("1", "1", "0.02")}

    found = value_creating_cycle(rates)

    assert found is not None
    assert found.gain == Fraction(103, 100) * Fraction(98, 100)
    assert found.description == "A -> B -> A returns 1.0094 points of A per point of A"


def test_a_cycle_in_a_component_unreachable_from_the_others_is_found() -> None:
    rates = {
        ("A", "B"): Fraction(1, 2),
        ("B", "A"): Fraction(2),
        ("X", "Y"): Fraction(3),
        ("Y", "Z"): Fraction(1, 2),
        ("Z", "X"): Fraction(3, 4),
    }

    found = value_creating_cycle(rates)

    assert found == ArbitrageCycle(programs=("X", "Y", "Z", "X"), gain=Fraction(9, 8))
    assert found.description == "X -> Y -> Z -> X returns 1.125 points of X per point of X"


def test_three_cycle_gains_where_every_two_cycle_loses() -> None:
    rates = {
        ("A", "B"): Fraction(2),
        ("B", "A"): Fraction(1, 3),
        ("B", "C"): Fraction(2),
        ("C", "B"): Fraction(1, 3),
        ("C", "A"): Fraction(1, 3),
        ("A", "C"): Fraction(2),
    }

    found = value_creating_cycle(rates)

    assert found is not None
    assert found.programs == ("A", "B", "C", "A")
    assert found.gain == Fraction(4, 3)
    assert (
        found.description
        == "A -> B -> C -> A returns 4/3 (about 1.33333) points of A per point of A"
    )


def test_networkx_failing_to_name_the_cycle_falls_back() -> None:
    # The same shape as integer weights (-1, 1, -3, 0, -3, 4) on which networkx 3.6.1's
    # find_negative_cycle raises "detected but not found" (networkx issue #5916).
    rates = {
        ("A", "B"): Fraction(2),
        ("A", "C"): Fraction(1, 2),
        ("C", "B"): Fraction(8),
        ("C", "D"): Fraction(1),
        ("D", "A"): Fraction(8),
        ("D", "B"): Fraction(1, 16),
    }
    graph = nx.DiGraph()
    graph.add_edges_from(("origin", code) for code in "ABCD")
    graph.add_edges_from(
        (source, target, {"weight": -math.log2(rate)}) for (source, target), rate in rates.items()
    )
    with pytest.raises(nx.NetworkXError, match="detected but not found"):
        nx.find_negative_cycle(graph, "origin")

    found = value_creating_cycle(rates)

    assert found == ArbitrageCycle(programs=("A", "C", "D", "A"), gain=Fraction(4))


def test_no_cycles_and_no_rates_are_allowed() -> None:
    assert value_creating_cycle({}) is None
    assert value_creating_cycle({("A", "B"): Fraction(1000), ("B", "C"): Fraction(1000)}) is None


@pytest.mark.parametrize("rate", [Fraction(0), Fraction(-1, 2)])
def test_a_rate_that_is_not_positive_is_a_caller_error(rate: Fraction) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        value_creating_cycle({("A", "B"): Fraction(1), ("B", "A"): rate})


def test_a_self_loop_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="self-loop"):
        value_creating_cycle({("A", "A"): Fraction(1)})


def test_a_float_rate_is_a_caller_error() -> None:
    with pytest.raises(TypeError, match="must be a Fraction"):
        value_creating_cycle({("A", "B"): 0.5})  # type: ignore[dict-item]


CODES = "ABCDEF"
values = st.integers(min_value=1, max_value=10_000).map(lambda n: Fraction(n, 10_000))
fees = st.sampled_from([Fraction(0), Fraction(0), Fraction(1, 100), Fraction(25, 10_000)])
blocks = st.integers(min_value=1, max_value=50)


@st.composite
def rate_graphs(draw: st.DrawFn) -> Rates:
    """Programs with a value each; every ordered pair has no rate, a block rate or a value rate.

    Value rates without a fee multiply to exactly 1 around any cycle, so exact ties are common.
    """
    codes = CODES[: draw(st.integers(min_value=2, max_value=len(CODES)))]
    worth = {code: draw(values) for code in codes}
    rates: Rates = {}
    for source, target in itertools.permutations(codes, 2):
        kind = draw(st.sampled_from(["none", "none", "block", "value", "value"]))
        if kind == "block":
            rates[(source, target)] = Fraction(draw(blocks), draw(blocks))
        elif kind == "value":
            rates[(source, target)] = worth[source] / worth[target] * (1 - draw(fees))
    return rates


@settings(max_examples=300, deadline=None)
@given(rate_graphs())
def test_a_cycle_is_reported_iff_brute_force_finds_one_that_gains(rates: Rates) -> None:
    best = brute_force_best_gain(rates)

    found = value_creating_cycle(rates)

    if best is None or best <= 1:
        assert found is None
    else:
        assert found is not None
        assert_real_cycle(rates, found)
        assert found.gain <= best


@settings(max_examples=150, deadline=None)
@given(rate_graphs())
def test_the_fallback_isolates_a_gaining_cycle_whenever_there_is_one(rates: Rates) -> None:
    # The path taken only when networkx detects a gaining cycle but cannot name it, run on every
    # graph that has one so that its rarity in real graphs does not leave it untested.
    best = brute_force_best_gain(rates)
    if best is None or best <= 1:
        return

    found = _isolated(_graph(rates), rates)

    assert_real_cycle(rates, found)
