"""No rate may create value: find a cycle of conversions whose exact rate product exceeds one.

Programs are nodes; an edge (source, target) carries the best-case rate, in points of the target
received per point of the source, as an exact Fraction. Rounding to whole blocks or points only
ever loses, so a cycle creates value iff the exact product of its rates is greater than one; a
product of exactly one is allowed.

The search is networkx's Bellman-Ford negative-cycle search over the weights -log(rate). Those
weights are not floats: each is held exactly, as the rate itself (see `_NegLogRate`). A float
search needs a tolerance, and every tolerance is wrong one way or the other. A cycle whose exact
product is 1 (values 0.7365, 0.7738 and 0.622 converted around a triangle) sums to -8e-17 in
float logs, so a zero tolerance refuses a fair rate; a tolerance of epsilon per edge lets through
every cycle gaining less than about exp(k * epsilon), and at 10^15 points a gain of 10^-12
is still a thousand points per lap after rounding. Held exactly, there is no threshold: every
product > 1 is found and every product <= 1 is allowed.

Whatever cycle the search names is multiplied out again from the caller's rates before it is
reported. Where networkx detects a gaining cycle but fails to name it (a known bug), the cycle is
isolated by dropping edges that no gaining cycle needs, with networkx's detection as the judge.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Final

import networkx as nx

# A virtual origin has an edge to every program and none into it, so one search from it reaches a
# cycle in any component, and no cycle can pass through it. Its edges (and those of the origin
# negative_edge_cycle adds for itself) carry no rate: they are rate 1, weight -log 1 = 0.
_ORIGIN: Final = object()
_RATE: Final = "rate"
_UNIT: Final = Fraction(1)


@dataclass(frozen=True)
class ArbitrageCycle:
    """A cycle of conversions that returns more points than it started with."""

    programs: tuple[str, ...]  # program codes around the cycle, the first repeated at the end
    gain: Fraction  # exact product of the rates around the cycle, always > 1

    @property
    def description(self) -> str:
        """One line for an operator, e.g. 'A -> B -> A returns 2 points of A per point of A'."""
        start = self.programs[0]
        path = " -> ".join(self.programs)
        return f"{path} returns {_readable(self.gain)} points of {start} per point of {start}"

    def detail(self) -> dict[str, object]:
        """The cycle as JSON-ready problem detail; the gain is the exact fraction as a string."""
        return {"cycle": list(self.programs), "gain": str(self.gain)}


def value_creating_cycle(rates: Mapping[tuple[str, str], Fraction]) -> ArbitrageCycle | None:
    """Return one cycle whose exact rate product is > 1, or None if no rate creates value."""
    graph = _graph(rates)
    if graph.number_of_edges() == 0 or not nx.negative_edge_cycle(graph, weight=_weight):
        return None
    named = _named_by_networkx(graph, rates)
    return named if named is not None else _isolated(graph, rates)


def _graph(rates: Mapping[tuple[str, str], Fraction]) -> nx.DiGraph:
    graph = nx.DiGraph()
    # Sorted insertion makes the reported cycle independent of the mapping's order.
    for (source, target), rate in sorted(rates.items()):
        if not isinstance(rate, Fraction):
            raise TypeError(f"rate {source} -> {target} must be a Fraction, not {type(rate)}")
        if rate <= 0:
            raise ValueError(f"rate {source} -> {target} must be positive, got {rate}")
        if source == target:
            raise ValueError(f"rate {source} -> {target} is a self-loop")
        graph.add_edge(source, target, **{_RATE: rate})
    return graph


def _named_by_networkx(
    graph: nx.DiGraph, rates: Mapping[tuple[str, str], Fraction]
) -> ArbitrageCycle | None:
    # find_negative_cycle can start its walk back from a node that lies downstream of the cycle
    # rather than on it, and then raises NetworkXError (networkx issue #5916, still open in 3.6.1;
    # test_networkx_failing_to_name_the_cycle_falls_back reproduces it). Whatever it returns is
    # multiplied out again from the caller's rates, so only a cycle that truly gains is named.
    with_origin = graph.copy()
    with_origin.add_edges_from((_ORIGIN, program) for program in graph.nodes)
    try:
        found: list[str] = nx.find_negative_cycle(with_origin, _ORIGIN, weight=_weight)
    except nx.NetworkXError:
        return None
    return _cycle(found, rates)


def _isolated(graph: nx.DiGraph, rates: Mapping[tuple[str, str], Fraction]) -> ArbitrageCycle:
    # Drops every edge that some value-creating cycle can do without, asking negative_edge_cycle
    # after each drop: first in large chunks, halving a chunk whose removal leaves no gaining
    # cycle, down to single edges, which are kept. Every kept edge then lies on every gaining
    # cycle of what remains (removing more edges later creates none), so what remains is exactly
    # one simple cycle. O(k log E) searches for a cycle of k edges; only reached when
    # find_negative_cycle fails, and only within one strongly connected component.
    for component in sorted(nx.strongly_connected_components(graph), key=sorted):
        remaining = graph.subgraph(component).copy()
        if not nx.negative_edge_cycle(remaining, weight=_weight):
            continue
        chunks = [sorted(remaining.edges(data=True))]
        while chunks:
            chunk = chunks.pop()
            remaining.remove_edges_from(chunk)
            if nx.negative_edge_cycle(remaining, weight=_weight):
                continue
            remaining.add_edges_from(chunk)
            if len(chunk) > 1:
                chunks += [chunk[len(chunk) // 2 :], chunk[: len(chunk) // 2]]
        edges = nx.find_cycle(remaining)
        isolated = _cycle([edges[0][0], *(target for _, target in edges)], rates)
        if isolated is not None and len(isolated.programs) == remaining.number_of_edges() + 1:
            return isolated
    raise RuntimeError("negative_edge_cycle found a gaining cycle that no search could isolate")


class _NegLogRate:
    """The weight -log(rate), held exactly as the rate.

    Adding two weights multiplies the rates and a smaller weight is a larger rate, so Bellman-Ford
    computes on this exactly what it would on real-valued logs. networkx seeds a source's distance
    with the int 0 (-log 1) and compares with float inf (-log 0): both are read as those rates.
    """

    __slots__ = ("rate",)

    def __init__(self, rate: Fraction) -> None:
        self.rate = rate

    def __add__(self, other: object) -> _NegLogRate:
        return _NegLogRate(self.rate * _rate_of(other))

    __radd__ = __add__

    def __lt__(self, other: object) -> bool:
        return self.rate > _rate_of(other)

    def __le__(self, other: object) -> bool:
        return self.rate >= _rate_of(other)

    def __gt__(self, other: object) -> bool:
        return self.rate < _rate_of(other)

    def __ge__(self, other: object) -> bool:
        return self.rate <= _rate_of(other)

    def __eq__(self, other: object) -> bool:
        return self.rate == _rate_of(other)

    def __repr__(self) -> str:
        return f"-log({self.rate})"


def _rate_of(weight: object) -> Fraction:
    if isinstance(weight, _NegLogRate):
        return weight.rate
    if type(weight) is int and weight == 0:
        return Fraction(1)
    if isinstance(weight, float) and weight == math.inf:
        return Fraction(0)
    raise TypeError(f"not an exact -log(rate) weight: {weight!r}")


def _weight(source: object, target: object, data: Mapping[str, Fraction]) -> _NegLogRate:
    return _NegLogRate(data.get(_RATE, _UNIT))


def _cycle(found: list[str], rates: Mapping[tuple[str, str], Fraction]) -> ArbitrageCycle | None:
    """The search's node list as a cycle from its smallest code, if it is one that truly gains."""
    body = found[:-1]
    if len(found) < 3 or found[0] != found[-1] or len(set(body)) != len(body):
        return None
    start = body.index(min(body))
    programs = (*body[start:], *body[:start], body[start])
    steps = list(itertools.pairwise(programs))
    if any(step not in rates for step in steps):
        return None
    gain = _product(rates, steps)
    return ArbitrageCycle(programs=programs, gain=gain) if gain > 1 else None


def _product(rates: Mapping[tuple[str, str], Fraction], steps: list[tuple[str, str]]) -> Fraction:
    # Recomputed from the caller's rates, not from the search's distances, so that a refusal
    # always names a cycle the operator can multiply out by hand.
    return math.prod((rates[step] for step in steps), start=_UNIT)


def _readable(gain: Fraction) -> str:
    """The gain as an exact short decimal when there is one, else the fraction and an estimate."""
    twos = fives = 0
    denominator = gain.denominator
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    places = max(twos, fives)
    if denominator == 1 and places <= 12:
        digits = str(gain.numerator * 10**places // gain.denominator).rjust(places + 1, "0")
        whole, fraction = digits[: len(digits) - places], digits[len(digits) - places :]
        return f"{whole}.{fraction}".rstrip("0").rstrip(".") if places else whole
    with localcontext(prec=6):
        if gain < Fraction(1001, 1000):
            excess = Decimal(gain.numerator - gain.denominator) / gain.denominator
            return f"{gain} (about 1 + {excess})"
        return f"{gain} (about {Decimal(gain.numerator) / gain.denominator})"
