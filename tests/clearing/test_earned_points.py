"""Earned points round down, once per step: worked out by hand."""

from __future__ import annotations

from decimal import Decimal

from clearing.core.money import earned_points, multiplied_extra, spend_points


def test_spend_points_round_down_in_the_currencys_minor_units() -> None:
    assert spend_points(1999, Decimal(1), "CNY") == 19  # 19.99 yuan at 1 per yuan
    assert spend_points(1005, Decimal(2), "CNY") == 20  # 20.10
    assert spend_points(999, Decimal("0.5"), "CNY") == 4  # 4.995
    assert spend_points(1999, Decimal(1), "JPY") == 1999  # no minor units
    assert spend_points(1999, Decimal(1), "KWD") == 1  # 1.999 dinars
    assert spend_points(1, Decimal("0.000001"), "CNY") == 0


def test_multiplied_extra_and_earned_points() -> None:
    assert multiplied_extra(19, Decimal("1.5")) == 9  # 9.5
    assert multiplied_extra(33, Decimal(2)) == 33
    assert multiplied_extra(7, Decimal(1)) == 0
    assert earned_points(Decimal("2.999999")) == 2
    assert earned_points(Decimal(0)) == 0
    assert earned_points(Decimal("-3.5")) == 0
