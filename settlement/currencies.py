"""ISO 4217 currencies known to settlement, and exact conversion between minor units and text."""

from __future__ import annotations

import re
from types import MappingProxyType

from clearing.errors import InvalidInput

# Minor-unit exponent per ISO 4217 alphabetic code (ISO 4217 table A.1). Only codes listed here
# may be settled: an amount cannot be written exactly without knowing its exponent.
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


class UnknownCurrency(InvalidInput):
    code = "unknown_currency"
    title = "Unknown currency"


def is_known_currency(code: str) -> bool:
    """Whether `code` is an ISO 4217 code in the settlement table."""
    return code in CURRENCY_EXPONENTS


def exponent(code: str) -> int:
    """Minor-unit exponent of `code`; raises UnknownCurrency for a code not in the table."""
    try:
        return CURRENCY_EXPONENTS[code]
    except KeyError:
        raise UnknownCurrency(f"unknown ISO 4217 currency {code!r}", currency=code) from None


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
