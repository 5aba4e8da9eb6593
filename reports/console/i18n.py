"""The console's languages (English, zh-CN): message catalogues, amounts, points and dates.

Messages are marked in the templates with `{{ _("...") }}`; the zh-CN catalogue is
`locale/zh_CN/LC_MESSAGES/console.po`, compiled in memory when the console starts (no build
step, no binary file in the repository). tests/reports/test_console_i18n.py holds every message
of every template to having a translation.
"""

from __future__ import annotations

import io
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from babel.support import NullTranslations, Translations

from clearing.core.money import exponent
from clearing.core.timeutil import aware

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "console"
LANGUAGES = {"en": "English", "zh_CN": "中文（简体）"}
"""Each locale the console speaks, named in its own language (for the switcher)."""


@cache
def translations(locale: str) -> NullTranslations:
    """The message catalogue of a locale (English is the templates' own text)."""
    po = LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po.exists():
        return NullTranslations()
    with po.open("rb") as source:
        catalogue = read_po(source, locale=locale, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalogue)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def money(minor: int, currency: str, locale: str) -> str:
    """Minor units of a currency, in the locale's format (1234567 CNY: ¥12,345.67)."""
    amount = Decimal(minor).scaleb(-exponent(currency))
    return str(format_currency(amount, currency, locale=locale))


def points(value: int, locale: str) -> str:
    """Whole points with the locale's grouping."""
    return str(format_decimal(value, locale=locale))


def when(instant: datetime, zone: str, locale: str) -> str:
    """An instant shown in the party's zone."""
    return str(format_datetime(aware(instant), "medium", tzinfo=ZoneInfo(zone), locale=locale))


def day(value: date, locale: str) -> str:
    """A business date."""
    return str(format_date(value, "medium", locale=locale))
