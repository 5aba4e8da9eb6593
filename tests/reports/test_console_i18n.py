"""Every message of every console template has its zh-CN translation, and nothing is left over."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract
from babel.messages.pofile import read_po
from jinja2.ext import babel_extract

from reports.console.i18n import LOCALE_DIR, money, translations
from reports.console.roles import Role

TEMPLATES = Path(__file__).parents[2] / "reports" / "console" / "templates"


def _template_messages() -> set[str]:
    found: set[str] = set()
    for template in sorted(TEMPLATES.rglob("*.html")):
        with template.open("rb") as source:
            for _line, message, _comments, _context in extract(
                babel_extract,  # type: ignore[arg-type]
                source,
                options={"extensions": "jinja2.ext.i18n", "newstyle_gettext": "true"},
            ):
                found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_template_message_is_translated_into_chinese() -> None:
    messages = _template_messages()
    assert "Sign in" in messages  # the extraction itself works
    chinese = translations("zh_CN")
    missing = sorted(m for m in messages if chinese.gettext(m) == m)
    assert missing == []
    # Roles are shown through the catalogue too (their names come from the data, not a template).
    assert [r for r in Role if chinese.gettext(r.value) == r.value] == []


def test_the_catalogue_holds_no_message_twice() -> None:
    with (LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "console.po").open("rb") as source:
        catalogue = read_po(source)
    ids = [m.id for m in catalogue if m.id]
    assert len(ids) == len(set(ids))


def test_amounts_are_shown_in_the_currency_and_language_format() -> None:
    assert money(1234567, "CNY", "zh_CN") == "¥12,345.67"
    assert money(1234567, "CNY", "en") == "CN¥12,345.67"
    assert money(500, "JPY", "en") == "¥500"  # no minor unit
    assert money(-5, "CNY", "en") == "-CN¥0.05"
