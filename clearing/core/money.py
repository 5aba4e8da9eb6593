"""Money and points: the ISO 4217 table, the bounds on amounts, and every rounding of the platform.

Points are whole numbers, money is whole minor units of an ISO 4217 currency, rates and point
values are Decimals. Nothing else in the platform rounds.

Which way each rounding goes. Between a payer and a payee, the party that chooses how to split an
operation (into bulk lines, partial captures, partial refunds, many small conversions) must never
end better off than with the whole operation in one piece. So every rounding goes against the
party that controls the split, and the sum of the pieces is never kinder to it than the whole:

| what | who splits | rounding | function |
|---|---|---|---|
| money a funder owes for points it creates (merchant-funded accrual, conversion A -> B) | the funder | up | `value_owed_for_points` |
| points a member pays for an amount at checkout (full or partial capture) | merchant and member | up | `points_for_amount` |
| a fee owed to the platform (checkout, conversion) | the fee payer | up | `fee`, `conversion_fee` |
| points a member receives by conversion | the member | down | `converted_points`, `blocks_converted` |
| what is given back (refund points and fee, a reversal's money): the share done so far | the one asking for it back | down, cumulative | `cumulative_share` |
| what a program's issuer owes a mall item's supplier per unit (value x the agreement's wholesale rate) | nobody (a price per unit) | up | `wholesale_price` |
| points a member earns by the earning rules (spend x rate, x tier multiplier, campaign bonus) | member and merchant (how a purchase is split into events) | down, each step | `earned_points` |
| money value of the points outstanding (liability report: closing x point value in force) | nobody (a figure of one instant) | up: a liability is never understated | `value_owed_for_points` |
| a share shown in a report (breakage, redemption rate) | nobody | half-even, to `SHARE_PLACES` | `share` |

Earned points. Every step of the earning engine (a spend rule's points, a tier multiplier's
extra, a campaign multiplier's extra) rounds its exact product down to whole points, once, with
`earned_points`: a member's points are never fractional and never more than the rule gives, and
since floor(a) + floor(b) <= floor(a + b), no split of one purchase into several events earns more
than the purchase in one piece.

Up-rounding means the smallest accrual owes at least one minor unit, and no split into many small
lines owes less than the whole. Cumulative shares are path-independent: the total given back after
any sequence of partial refunds is the share of what has been refunded so far, and a full refund,
in however many steps, gives back exactly what was taken.

Bounds. Any one operation's points and minor units are below 10^15 (`MAX_AMOUNT`), checked where
the request schemas are defined and again on every amount a rounding produces; a ledger balance
stays within +/- 10^18 (`BALANCE_LIMIT`), checked on the balance a posting results in. Eight
balance slots of 10^18 still sum inside a signed 64-bit integer; totals over many operations
(settlement, reports) are summed in types that cannot overflow.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext
from types import MappingProxyType

from clearing.core.errors import InvalidInput

MAX_AMOUNT = 10**15 - 1
"""The largest points or minor units one operation may carry."""
BALANCE_LIMIT = 10**18
"""The largest magnitude of one ledger balance row."""

# Minor-unit exponent per ISO 4217 alphabetic code (ISO 4217 table A.1). Only codes listed here
# may be used: an amount cannot be written exactly without knowing its exponent.
CURRENCY_EXPONENTS = MappingProxyType(
    {
        "AED": 2,
        "AUD": 2,
        "BHD": 3,
        "BRL": 2,
        "CAD": 2,
        "CHF": 2,
        "CLP": 0,
        "CNY": 2,
        "CZK": 2,
        "DKK": 2,
        "EUR": 2,
        "GBP": 2,
        "HKD": 2,
        "HUF": 2,
        "IDR": 2,
        "ILS": 2,
        "INR": 2,
        "ISK": 0,
        "JOD": 3,
        "JPY": 0,
        "KRW": 0,
        "KWD": 3,
        "MOP": 2,
        "MXN": 2,
        "MYR": 2,
        "NOK": 2,
        "NZD": 2,
        "OMR": 3,
        "PHP": 2,
        "PLN": 2,
        "SAR": 2,
        "SEK": 2,
        "SGD": 2,
        "THB": 2,
        "TND": 3,
        "TRY": 2,
        "TWD": 2,
        "USD": 2,
        "VND": 0,
        "ZAR": 2,
    }
)

_PRECISION = 60
SHARE_PLACES = 6
"""Decimal places of a share shown in a report (0.123457 is 12.3457%)."""


class UnknownCurrency(InvalidInput):
    code = "unknown_currency"
    title = "Unknown currency"


class AmountOutOfRange(InvalidInput):
    code = "amount_out_of_range"
    title = "Amount out of range"


def is_known_currency(code: str) -> bool:
    """Whether `code` is an ISO 4217 code in the table."""
    return code in CURRENCY_EXPONENTS


def exponent(code: str) -> int:
    """Minor-unit exponent of `code`; raises UnknownCurrency for a code not in the table."""
    try:
        return CURRENCY_EXPONENTS[code]
    except KeyError:
        raise UnknownCurrency(
            f"unknown ISO 4217 currency {code!r}", field="currency", currency=code
        ) from None


def format_minor(amount: int, code: str) -> str:
    """Signed decimal text of `amount` minor units with exactly the currency's exponent digits."""
    exp = exponent(code)
    sign = "-" if amount < 0 else ""
    if exp == 0:
        return f"{sign}{abs(amount)}"
    whole, frac = divmod(abs(amount), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}"


_PATTERNS: dict[int, re.Pattern[str]] = {}


def parse_minor(text: str, code: str) -> int:
    """Inverse of format_minor; raises ValueError unless `text` has exactly the exponent digits."""
    exp = exponent(code)
    pattern = _PATTERNS.get(exp)
    if pattern is None:
        frac = rf"\.(\d{{{exp}}})" if exp else ""
        pattern = _PATTERNS[exp] = re.compile(rf"(-?)(\d+){frac}")
    match = pattern.fullmatch(text)
    if match is None:
        raise ValueError(f"not an amount with {exp} decimals: {text!r}")
    value: int = int(match.group(2)) * 10**exp + (int(match.group(3)) if exp else 0)
    return -value if match.group(1) else value


def bounded(amount: int, what: str) -> int:
    """`amount` if one operation may carry it, else AmountOutOfRange (a 4xx, never an overflow)."""
    if abs(amount) > MAX_AMOUNT:
        raise AmountOutOfRange(
            f"{what} of this operation would exceed {MAX_AMOUNT}", field=what, limit=MAX_AMOUNT
        )
    return amount


def check_rate(value: Decimal, what: str) -> Decimal:
    """A finite rate strictly above zero."""
    if not value.is_finite() or value <= 0:
        raise InvalidInput(f"{what} must be greater than zero", field=what)
    return value


def check_fee_rate(value: Decimal, what: str = "fee_rate") -> Decimal:
    """A fee rate in [0, 1)."""
    if not value.is_finite() or value < 0 or value >= 1:
        raise InvalidInput(f"{what} must be at least 0 and below 1", field=what)
    return value


def _minor_per_point(point_value: Decimal, currency: str) -> Decimal:
    return point_value.scaleb(exponent(currency))


def _whole(exact: Decimal, rounding: str) -> int:
    return int(exact.to_integral_value(rounding))


def points_for_amount(amount: int, point_value: Decimal, currency: str) -> int:
    """Points a member pays for `amount` minor units: up, ceil(amount / point value)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        points = _whole(Decimal(amount) / _minor_per_point(point_value, currency), ROUND_CEILING)
    return bounded(points, "points")


def value_owed_for_points(points: int, point_value: Decimal, currency: str) -> int:
    """Minor units a funder owes for points it creates: up, ceil(points x point value)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        owed = _whole(Decimal(points) * _minor_per_point(point_value, currency), ROUND_CEILING)
    return bounded(owed, "amount")


def fee(amount_minor: Decimal | int, rate: Decimal) -> int:
    """A fee owed to the platform on an amount of minor units: up, ceil(amount x rate)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return bounded(_whole(Decimal(amount_minor) * rate, ROUND_CEILING), "fee")


def converted_points(
    points_out: int, source_value: Decimal, target_value: Decimal, fee_rate: Decimal
) -> int:
    """Points of B a member receives for points of A: down, floor(A x value A x (1 - fee) / value B)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        exact = Decimal(points_out) * source_value * (1 - fee_rate) / target_value
        return bounded(_whole(exact, ROUND_FLOOR), "points")


def conversion_fee(points_out: int, source_value: Decimal, fee_rate: Decimal, currency: str) -> int:
    """The platform's fee on a conversion: up, ceil(fee rate x value of the points given up)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return fee(Decimal(points_out) * _minor_per_point(source_value, currency), fee_rate)


def blocks_converted(points_out: int, source_block: int, target_block: int) -> int:
    """Points of B under a bilateral block rate: whole blocks only."""
    return bounded((points_out // source_block) * target_block, "points")


def cumulative_share(total: int, part_so_far: int, whole: int) -> int:
    """floor(total x part / whole): the share of `total` given back once `part_so_far` of `whole` is."""
    return total * part_so_far // whole


def earned_points(exact: Decimal) -> int:
    """Whole points earned for an exact (fractional) amount: down, floor(exact), never below 0."""
    if not exact.is_finite() or exact <= 0:
        return 0
    return bounded(_whole(exact, ROUND_FLOOR), "points")


def spend_points(spend: int, rate: Decimal, currency: str) -> int:
    """Points earned on `spend` minor units at `rate` points per major unit: down."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return earned_points(Decimal(spend).scaleb(-exponent(currency)) * rate)


def multiplied_extra(points: int, multiplier: Decimal) -> int:
    """The extra points a multiplier adds to `points`: down, floor(points x (multiplier - 1))."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return earned_points(Decimal(points) * (multiplier - 1))


def wholesale_price(value: int, rate: Decimal) -> int:
    """Minor units an issuer owes a mall item's supplier per unit: up, ceil(value x rate)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return bounded(_whole(Decimal(value) * rate, ROUND_CEILING), "amount")


def share(part: int, whole: int) -> Decimal | None:
    """part / whole to SHARE_PLACES places, half-even; None when `whole` is zero (no share)."""
    if whole == 0:
        return None
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return (Decimal(part) / Decimal(whole)).quantize(
            Decimal(1).scaleb(-SHARE_PLACES), ROUND_HALF_EVEN
        )
