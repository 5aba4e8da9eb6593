"""The signature module's fast paths read and write structured fields exactly as http_sfv does.

Every request and response of the API goes through them; whatever they do not recognise they
hand to http_sfv, so on any input the two must agree: same value, same error.
"""

from __future__ import annotations

import base64
from typing import Any

from http_sfv.dictionary import Dictionary
from http_sfv.item import InnerList, Item
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clearing.web import signatures

KEYS = st.sampled_from(["sig1", "sig", "a-b", "*x", "sha-256", "sha-512", "created", "k.1", "n_2"])
STRINGS = st.text(st.characters(min_codepoint=0x1F, max_codepoint=0x7F), max_size=12)
BARE = st.one_of(
    STRINGS.map(lambda s: '"' + s + '"'),
    st.integers(-(10**16), 10**16).map(str),
    st.sampled_from(["?1", "?0", "ed25519", "1.5", "-0", "007", ":AAE=:", ":AA:", "@1"]),
)
PARAMS = st.lists(st.tuples(KEYS, st.one_of(BARE, st.just(""))), max_size=4).map(
    lambda ps: "".join(f";{k}={v}" if v else f";{k}" for k, v in ps)
)
INNER = st.lists(st.tuples(STRINGS, PARAMS), max_size=4).map(
    lambda items: "(" + " ".join(f'"{s}"{p}' for s, p in items) + ")"
)
BYTES = st.binary(max_size=70).map(lambda b: ":" + base64.b64encode(b).decode() + ":")
MEMBER = st.tuples(KEYS, st.one_of(INNER, BYTES, BARE), PARAMS).map(
    lambda m: f"{m[0]}={m[1]}{m[2]}"
)
FIELD = st.lists(MEMBER, min_size=1, max_size=3).map(", ".join)
NOISE = st.text(st.sampled_from('sig1=:()"; ,-\\AZaz09+/=?*.@\t'), max_size=40)


def _canonical(value: Any) -> Any:
    """Values with their types and parameters (http_sfv's == compares values only)."""
    if isinstance(value, Dictionary):
        return [(k, _canonical(m)) for k, m in value.items()]
    if isinstance(value, InnerList):
        return ("inner", [_canonical(i) for i in value], _canonical(value.params))
    if isinstance(value, Item):
        return ("item", type(value.value).__name__, value.value, _canonical(value.params))
    if isinstance(value, dict):
        return [(k, type(v).__name__, v) for k, v in value.items()]
    raise AssertionError(type(value))


def _library(text: str) -> Any:
    parsed = Dictionary()
    try:
        parsed.parse(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return "error"
    return _canonical(parsed)


def _ours(text: str) -> Any:
    try:
        return _canonical(signatures._parse_dict(text))
    except (ValueError, UnicodeEncodeError):
        return "error"


@settings(max_examples=400, deadline=None)
@given(st.one_of(FIELD, NOISE))
@example('sig1=("@method" "@target-uri");created=1;keyid="k";nonce="n";alg="ed25519"')
@example('sig1=("a");created=007;keyid="x;y=z"')
@example('sig1=("a");created=1.5')
@example('sig1=("a");alg=ed25519')
@example('sig1=("a\\"b")')
@example('sig1=( "a")')
@example("sig1=:AA=A:")
@example("sig1=:QUJD:, sig2=:QUJD:")
@example('sig1=("a");created=1;created=2')
@example('sig1=("a");created=-0')
@example('sig1=("a");created=1234567890123456')
def test_dictionary_parsing_agrees_with_http_sfv(text: str) -> None:
    assert _ours(text) == _library(text)


@settings(max_examples=400, deadline=None)
@given(FIELD)
def test_serialisation_agrees_with_http_sfv(text: str) -> None:
    parsed = Dictionary()
    try:
        parsed.parse(text.encode("ascii"))
    except ValueError:
        return
    assert signatures._ser_dictionary(parsed) == str(parsed)
    for member in parsed.values():
        assert signatures._ser_member(member) == str(member)


@given(st.text(max_size=10), st.integers(-(10**16), 10**16), st.binary(max_size=40))
def test_bare_items_are_refused_or_written_as_http_sfv_does(
    text: str, number: int, data: bytes
) -> None:
    for value in (text, number, data, True, False):
        try:
            expected: str | None = str(Item(value))
        except ValueError:
            expected = None
        try:
            ours: str | None = signatures._ser_bare(value)
        except ValueError:
            ours = None
        assert ours == expected
