"""Every rounding of the platform, each named with its mode, in one place.

Points are whole numbers, money is whole minor units, rates and point values are Decimals.
Rules, in the platform's favour of no one:
- points needed to pay an amount: rounded up (the merchant is paid in full);
- points received by conversion: rounded down (the member never receives a fraction);
- money values of points and fees: half-even to the minor unit (no drift either way over volume);
- shares of a partial refund: cumulative floor, so the shares always add up to the whole.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext

from clearing.errors import InvalidInput

# ISO 4217 minor-unit exponents of the currencies we settle.
MINOR_UNITS: dict[str, int] = {
    "CNY": 2,
    "HKD": 2,
    "MOP": 2,
    "TWD": 2,
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "SGD": 2,
    "JPY": 0,
    "KRW": 0,
}

_PRECISION = 50


def exponent(currency: str) -> int:
    """Minor-unit exponent of an ISO 4217 currency we support."""
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise InvalidInput(f"unsupported currency {currency!r}", field="currency") from None


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


def points_for_amount(amount: int, point_value: Decimal, currency: str) -> int:
    """Points needed to pay `amount` minor units: ceil(amount / point value)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return int(
            (Decimal(amount) / _minor_per_point(point_value, currency)).to_integral_value(
                ROUND_CEILING
            )
        )


def value_of_points(points: int, point_value: Decimal, currency: str) -> int:
    """Money value of points in minor units, half-even."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return int(
            (Decimal(points) * _minor_per_point(point_value, currency)).to_integral_value(
                ROUND_HALF_EVEN
            )
        )


def fee(amount_minor: Decimal | int, rate: Decimal) -> int:
    """A fee on an amount of minor units, half-even."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return int((Decimal(amount_minor) * rate).to_integral_value(ROUND_HALF_EVEN))


def converted_points(
    points_out: int, source_value: Decimal, target_value: Decimal, fee_rate: Decimal
) -> int:
    """Points of B for points of A: floor(points A x value A x (1 - fee) / value B)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        exact = Decimal(points_out) * source_value * (1 - fee_rate) / target_value
        return int(exact.to_integral_value(ROUND_FLOOR))


def conversion_fee(points_out: int, source_value: Decimal, fee_rate: Decimal, currency: str) -> int:
    """The platform's fee on a conversion: fee rate x value of the points given up, half-even."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        exact = Decimal(points_out) * _minor_per_point(source_value, currency)
        return fee(exact, fee_rate)


def blocks_converted(points_out: int, source_block: int, target_block: int) -> int:
    """Points of B under a bilateral block rate: whole blocks only."""
    return (points_out // source_block) * target_block


def cumulative_share(total: int, part_so_far: int, whole: int) -> int:
    """floor(total x part / whole): the share of `total` owed once `part_so_far` of `whole` is done."""
    return total * part_so_far // whole
