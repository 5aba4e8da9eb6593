"""HTTP Message Signatures (RFC 9421) with Ed25519, and Content-Digest (RFC 9530).

Pure functions: no database, no web framework. Nonce replay is the caller's job.

Verification policy (``verify_request``): the first label of ``Signature-Input``, in the order
received, whose parameters and covered components satisfy the policy below is the one verified;
labels that do not satisfy it (e.g. another party's RSA signature) are ignored. When none does,
the error of the first label is raised.

- requests must cover ``@method`` and ``@target-uri``, and when the body is non-empty also
  ``content-digest`` and ``content-type``; a POST carrying an ``Idempotency-Key`` must cover it
  too (``idempotency_key_unsigned`` otherwise), so that a replayed body cannot be re-keyed; responses must cover ``@status``, and ``content-type``
  when the response has one, and ``content-digest`` when the body is non-empty;
- ``created`` and ``keyid`` are required (and ``nonce`` for requests); ``alg``, when present,
  must be ``ed25519``;
- a received Content-Digest, covered or not, must match the body (sha-256 and sha-512 members
  are checked; a field naming only unknown algorithms does not match).

Derived ``@target-uri`` and ``@authority`` values are normalised (lower-case scheme and host,
default port dropped, empty path as ``/``) on both sides, so that a server that rebuilt its URL
from the Host header agrees with a client that signed the URL it was given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_sfv.dictionary import Dictionary
from http_sfv.item import InnerList, Item, ser_bare_item
from http_sfv.list import List

from clearing.core.errors import ClearingError, InvalidInput

__all__ = [
    "STRUCTURED_FIELD_TYPES",
    "BodyDigest",
    "ClockSkew",
    "DigestMismatch",
    "IdempotencyKeyUnsigned",
    "InvalidPublicKey",
    "NonceReplayed",
    "RequestContext",
    "SignatureError",
    "SignatureExpired",
    "SignatureInvalid",
    "SignatureMalformed",
    "SignatureMissing",
    "SignedMessage",
    "UnknownKey",
    "VerifiedSignature",
    "content_digest",
    "load_public_key",
    "parse_signed_head",
    "parse_signed_request",
    "public_jwk",
    "request_signature_base",
    "response_signature_base",
    "sign_request",
    "sign_response",
    "verify_digest",
    "verify_request",
    "verify_response",
    "verify_signature_base",
]

ALG = "ed25519"

# RFC 9421 section 2.1.1: ";sf" needs the field's structured type, which only a registry can
# tell; callers may add their own fields.
STRUCTURED_FIELD_TYPES: dict[str, str] = {
    "accept-signature": "dictionary",
    "cache-status": "list",
    "client-cert": "item",
    "client-cert-chain": "list",
    "content-digest": "dictionary",
    "priority": "dictionary",
    "proxy-status": "list",
    "repr-digest": "dictionary",
    "signature": "dictionary",
    "signature-input": "dictionary",
    "want-content-digest": "dictionary",
    "want-repr-digest": "dictionary",
}

_DIGESTS: dict[str, Callable[[], Any]] = {
    "sha-256": hashlib.sha256,
    "sha-512": hashlib.sha512,
}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_OBS_FOLD = re.compile(r"\r\n[ \t]+")
# Signature base lines must be ASCII without controls (RFC 9421 section 2.5); HTAB may occur
# inside field values.
_BASE_VALUE = re.compile(r"[\t\x20-\x7e]*")
_FIELD_PARAMS = frozenset({"sf", "key", "bs", "req"})
# RFC 8941 grammar pieces for the fast paths below, which handle the shapes we and our partners
# send and leave everything else to http_sfv (which they agree with, byte for byte).
_SF_STRING_CHARS = re.compile(r"[\x20-\x7e]*")
_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_SF_MAX_INT = 999_999_999_999_999
_FAST_STRING = r'"[\x20\x21\x23-\x5b\x5d-\x7e]*"'  # an sf-string without escapes
_FAST_BYTES_MEMBER = re.compile(r"([a-z*][a-z0-9_\-.*]*)=:([A-Za-z0-9+/=]*):")
_FAST_INNER_LIST_MEMBER = re.compile(
    rf"([a-z*][a-z0-9_\-.*]*)=\(((?:{_FAST_STRING}(?: {_FAST_STRING})*)?)\)"
    rf"((?:;[a-z*][a-z0-9_\-.*]*=(?:-?[0-9]{{1,15}}|{_FAST_STRING}))*)"
)
_FAST_ITEM = re.compile(r'"([^"]*)"')
_FAST_PARAM = re.compile(r';([^=]+)=(?:"([^"]*)"|(-?[0-9]+))')


# --------------------------------------------------------------------------- errors


class SignatureError(ClearingError):
    """A request or response failed signature verification."""

    status: ClassVar[int] = 401
    code: ClassVar[str] = "signature_invalid"
    title: ClassVar[str] = "Invalid HTTP message signature"


class SignatureMissing(SignatureError):
    code = "signature_missing"
    title = "HTTP message signature missing"


class SignatureMalformed(SignatureError):
    code = "signature_malformed"
    title = "HTTP message signature malformed"


class SignatureInvalid(SignatureError):
    code = "signature_invalid"
    title = "Invalid HTTP message signature"


class UnknownKey(SignatureError):
    code = "unknown_key"
    title = "Unknown signing key"


class SignatureExpired(SignatureError):
    code = "signature_expired"
    title = "HTTP message signature expired"


class ClockSkew(SignatureError):
    code = "clock_skew"
    title = "Signature creation time too far from server time"

    def __init__(self, detail: str, *, server_time: int, **extra: Any) -> None:
        super().__init__(detail, server_time=server_time, **extra)
        self.server_time = server_time


class NonceReplayed(SignatureError):
    code = "nonce_replayed"
    title = "Signature nonce already used"


class DigestMismatch(SignatureError):
    code = "digest_mismatch"
    title = "Content-Digest does not match the body"


class IdempotencyKeyUnsigned(SignatureMalformed):
    code = "idempotency_key_unsigned"
    title = "Idempotency-Key not covered by the signature"


class InvalidPublicKey(InvalidInput):
    code = "invalid_public_key"
    title = "Invalid public key"


class _Unresolvable(Exception):
    """A covered component has no value in this message."""


class _BadComponent(Exception):
    """A component identifier is not acceptable whatever the message."""


# --------------------------------------------------------------------------- structured fields

# http_sfv serialises by checking every character in a generator: most of the CPU of signing and
# verifying. These produce the same text for the bare item types a signature uses (strings,
# integers, booleans, byte sequences) and hand any other type to http_sfv.


def _parse_dict(value: str) -> Dictionary:
    """Parse a Dictionary field value; ValueError (or UnicodeEncodeError) when invalid.

    A single byte-sequence member (Signature, Content-Digest) or a single inner list of plain
    strings with integer or string parameters (Signature-Input) is read with one regular
    expression; anything else goes through http_sfv's parser, which reads these the same way.
    """
    match = _FAST_BYTES_MEMBER.fullmatch(value)
    if match is not None:
        try:
            data = base64.standard_b64decode(match[2])
        except binascii.Error:
            pass
        else:
            return Dictionary({match[1]: data})
    else:
        match = _FAST_INNER_LIST_MEMBER.fullmatch(value)
        if match is not None:
            covered = InnerList(_FAST_ITEM.findall(match[2]))
            for name, text, number in _FAST_PARAM.findall(match[3]):
                covered.params[name] = int(number) if number else text
            return Dictionary({match[1]: covered})
    parsed = Dictionary()
    parsed.parse(value.encode("ascii"))
    return parsed


def _ser_bare(value: Any) -> str:
    kind = type(value)
    if kind is str:
        if not _SF_STRING_CHARS.fullmatch(value):
            raise ValueError("String contains disallowed characters")
        if '"' in value or "\\" in value:
            value = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{value}"'
    if kind is int:
        if not -_SF_MAX_INT <= value <= _SF_MAX_INT:
            raise ValueError("Input is out of Integer range.")
        return str(value)
    if kind is bool:
        return "?1" if value else "?0"
    if kind is bytes:
        return f":{base64.b64encode(value).decode('ascii')}:"
    return str(ser_bare_item(value))


def _ser_key(key: str) -> str:
    if not _SF_KEY.fullmatch(key):
        raise ValueError("Key contains disallowed characters")
    return key


def _ser_params(params: Mapping[str, Any]) -> str:
    if not params:
        return ""
    return "".join(
        f";{_ser_key(k)}" if v is True else f";{_ser_key(k)}={_ser_bare(v)}"
        for k, v in params.items()
    )


def _ser_item(item: Item) -> str:
    return _ser_bare(item.value) + _ser_params(item.params)


def _ser_member(member: Item | InnerList) -> str:
    if isinstance(member, Item):
        return _ser_item(member)
    if isinstance(member, InnerList):
        return f"({' '.join(_ser_member(i) for i in member)}){_ser_params(member.params)}"
    return str(member)


def _ser_dictionary(members: Mapping[str, Item | InnerList]) -> str:
    if not members:
        raise ValueError("No contents; field should not be emitted")
    return ", ".join(
        _ser_key(k) + _ser_params(m.params)
        if isinstance(m, Item) and m.value is True
        else f"{_ser_key(k)}={_ser_member(m)}"
        for k, m in members.items()
    )


# --------------------------------------------------------------------------- digests


def content_digest(body: bytes) -> str:
    """The RFC 9530 Content-Digest field value of ``body`` with sha-256."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode('ascii')}:"


class BodyDigest:
    """A Content-Digest checked while the body streams in: ``update`` each chunk, then ``verify``."""

    __slots__ = ("_checks",)

    def __init__(self, value: str) -> None:
        try:
            parsed = _parse_dict(value)
        except (ValueError, UnicodeEncodeError):
            raise DigestMismatch("Content-Digest is not a valid structured field") from None
        self._checks: list[tuple[str, bytes, Any]] = []
        for algorithm, member in parsed.items():
            hasher = _DIGESTS.get(algorithm)
            if hasher is None:
                continue
            if not isinstance(member, Item) or not isinstance(member.value, bytes):
                raise DigestMismatch(f"Content-Digest {algorithm} member is not a byte sequence")
            self._checks.append((algorithm, member.value, hasher()))
        if not self._checks:
            raise DigestMismatch("Content-Digest has no sha-256 or sha-512 member")

    def update(self, chunk: bytes) -> None:
        """Feed the next chunk of the body."""
        for _, _, state in self._checks:
            state.update(chunk)

    def verify(self) -> None:
        """Raise DigestMismatch unless every known member matches the body fed so far."""
        for algorithm, expected, state in self._checks:
            if not hmac.compare_digest(expected, state.digest()):
                raise DigestMismatch(f"Content-Digest {algorithm} does not match the body")


def verify_digest(value: str, body: bytes) -> None:
    """Raise DigestMismatch unless every known member of a Content-Digest value matches ``body``."""
    digest = BodyDigest(value)
    digest.update(body)
    digest.verify()


# --------------------------------------------------------------------------- keys


def load_public_key(data: str | bytes) -> Ed25519PublicKey:
    """Load an Ed25519 public key from SubjectPublicKeyInfo PEM or an OKP/Ed25519 JWK."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    raw = raw.strip()
    if raw.startswith(b"{"):
        return _load_jwk(raw)
    if raw.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(raw)
        except (ValueError, TypeError):
            raise InvalidPublicKey("public key PEM could not be parsed") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidPublicKey("public key is not an Ed25519 key")
        return key
    raise InvalidPublicKey("public key must be a PEM SubjectPublicKeyInfo or an OKP JWK")


def _load_jwk(raw: bytes) -> Ed25519PublicKey:
    try:
        jwk = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPublicKey("public key JWK is not valid JSON") from None
    if not isinstance(jwk, dict):
        raise InvalidPublicKey("public key JWK must be a JSON object")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise InvalidPublicKey('public key JWK must have kty "OKP" and crv "Ed25519"')
    if "d" in jwk:
        # Refuse rather than silently store private material in a public-key registry.
        raise InvalidPublicKey("public key JWK contains a private key")
    if jwk.get("alg", "EdDSA") not in ("EdDSA", "Ed25519"):
        raise InvalidPublicKey("public key JWK alg must be EdDSA")
    x = jwk.get("x")
    if not isinstance(x, str) or not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", x):
        raise InvalidPublicKey('public key JWK "x" must be base64url')
    try:
        key_bytes = base64.urlsafe_b64decode(x.rstrip("=") + "=" * (-len(x.rstrip("=")) % 4))
        return Ed25519PublicKey.from_public_bytes(key_bytes)
    except (ValueError, binascii.Error):
        raise InvalidPublicKey('public key JWK "x" is not a 32-byte Ed25519 key') from None


def public_jwk(key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The public JWK (RFC 8037) of ``key`` under key id ``kid``."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


# --------------------------------------------------------------------------- messages


class _Fields:
    """Case-insensitive view of header fields, values normalised as RFC 9421 section 2.1 says."""

    def __init__(self, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        self._lines: dict[str, list[str]] = {}
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            if "\n" in value:
                value = _OBS_FOLD.sub(" ", value)
            normalised = value.strip(" \t")
            self._lines.setdefault(name.lower(), []).append(normalised)

    def lines(self, name: str) -> list[str] | None:
        return self._lines.get(name)

    def get(self, name: str) -> str | None:
        lines = self._lines.get(name)
        return None if lines is None else ", ".join(lines)


@dataclass(frozen=True)
class _Target:
    scheme: str
    authority: str
    path: str
    query: str | None

    @classmethod
    def parse(cls, url: str) -> _Target:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        if not scheme or not host:
            raise ValueError("URL must be absolute with a host")
        port = parts.port
        if ":" in host:
            host = f"[{host}]"
        authority = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
        has_query = "?" in url.split("#", 1)[0]
        return cls(scheme, authority, parts.path or "/", parts.query if has_query else None)

    @property
    def query_suffix(self) -> str:
        return "" if self.query is None else f"?{self.query}"


@dataclass(frozen=True)
class _Message:
    fields: _Fields
    method: str | None = None
    target: _Target | None = None
    status: int | None = None
    request: _Message | None = None


@dataclass(frozen=True)
class RequestContext:
    """The request a response answers, for response signatures covering ``;req`` components."""

    method: str
    url: str
    headers: Mapping[str, str]


def _request_message(method: str, url: str, headers: Mapping[str, str]) -> _Message:
    return _Message(_Fields(headers), method=method, target=_Target.parse(url))


def _response_message(
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    request: RequestContext | None,
) -> _Message:
    req = (
        None if request is None else _request_message(request.method, request.url, request.headers)
    )
    return _Message(_Fields(headers), status=status, request=req)


# --------------------------------------------------------------------------- components


def _component_values(message: _Message, component: Item) -> list[str]:
    """The value(s) of one covered component; several only for a repeated ``@query-param``."""
    name = component.value
    params = dict(component.params)
    # A token is a str subclass, but identifiers must be sf strings (RFC 9421 section 2).
    if type(name) is not str or not name or name != name.lower():
        raise _BadComponent("component identifiers must be lower-case strings")
    if "req" in params:
        if params.pop("req") is not True:
            raise _BadComponent('"req" must be a boolean flag')
        if message.request is None:
            raise _Unresolvable(f'no request for "{name}";req')
        message = message.request
    if name.startswith("@"):
        return _derived_values(message, name, params)
    return [_field_value(message, name, params)]


def _derived_values(message: _Message, name: str, params: dict[str, Any]) -> list[str]:
    if name == "@query-param":
        if set(params) != {"name"} or type(params["name"]) is not str:
            raise _BadComponent('"@query-param" needs exactly a string "name" parameter')
        return _query_param_values(message, params["name"])
    if params:
        raise _BadComponent(f'"{name}" takes no parameters')
    if name == "@status":
        if message.status is None:
            raise _BadComponent('"@status" only applies to responses')
        return [f"{message.status:03d}"]
    if name == "@method":
        if message.method is None:
            raise _BadComponent('"@method" only applies to requests')
        return [message.method]
    target = message.target
    if target is None:
        raise _BadComponent(f'"{name}" only applies to requests')
    if name == "@target-uri":
        return [f"{target.scheme}://{target.authority}{target.path}{target.query_suffix}"]
    if name == "@authority":
        return [target.authority]
    if name == "@scheme":
        return [target.scheme]
    if name == "@request-target":
        if message.method == "CONNECT":
            return [target.authority]
        return [f"{target.path}{target.query_suffix}"]
    if name == "@path":
        return [target.path]
    if name == "@query":
        return [f"?{target.query or ''}"]
    raise _BadComponent(f'unsupported derived component "{name}"')


def _form_encode(text: str) -> str:
    # HTML "application/x-www-form-urlencoded" percent-encode set, spaces as %20 (RFC 9421 2.2.8).
    return urllib.parse.quote(text, safe="*-._").replace("~", "%7E")


def _query_param_values(message: _Message, wanted: str) -> list[str]:
    if message.target is None:
        raise _BadComponent('"@query-param" only applies to requests')
    pairs = urllib.parse.parse_qsl(message.target.query or "", keep_blank_values=True)
    values = [_form_encode(value) for key, value in pairs if _form_encode(key) == wanted]
    if not values:
        raise _Unresolvable("covered query parameter is absent")
    return values


def _field_value(message: _Message, name: str, params: dict[str, Any]) -> str:
    if set(params) - _FIELD_PARAMS:
        raise _BadComponent(f'unsupported parameter on "{name}"')
    if any(value is not True for key, value in params.items() if key != "key"):
        raise _BadComponent(f'flags on "{name}" must be boolean true')
    lines = message.fields.lines(name)
    if lines is None:
        raise _Unresolvable(f'covered field "{name}" is absent')
    if "bs" in params:
        if len(params) != 1:
            raise _BadComponent('"bs" cannot be combined with other parameters')
        wrapped = List()
        try:
            for line in lines:
                wrapped.append(Item(line.encode("latin-1")))
        except UnicodeEncodeError:
            raise _Unresolvable(f'covered field "{name}" is not latin-1') from None
        return str(wrapped)
    value = ", ".join(lines)
    if "key" in params:
        key = params["key"]
        if type(key) is not str:
            raise _BadComponent('"key" must be a string')
        parsed = _parse_structured(name, value, "dictionary")
        assert isinstance(parsed, Dictionary)
        if key not in parsed:
            raise _Unresolvable(f'covered dictionary member of "{name}" is absent')
        return str(parsed[key])
    if "sf" in params:
        kind = STRUCTURED_FIELD_TYPES.get(name)
        if kind is None:
            raise _BadComponent(f'"{name}" is not a known structured field')
        return str(_parse_structured(name, value, kind))
    return value


def _parse_structured(name: str, value: str, kind: str) -> Dictionary | List | Item:
    parsed: Dictionary | List | Item = {"dictionary": Dictionary, "list": List, "item": Item}[
        kind
    ]()
    try:
        parsed.parse(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise _Unresolvable(f'covered field "{name}" is not a valid structured field') from None
    return parsed


def _identity(component: Item) -> tuple[Any, frozenset[tuple[str, Any]]]:
    # Parameter order does not change a component's identity (RFC 9421 section 2).
    return component.value, frozenset(component.params.items())


def _display(component: Item) -> str:
    return str(component.value) + _ser_params(component.params)


def _build_base(message: _Message, covered: InnerList) -> str:
    """RFC 9421 section 2.5: one line per covered component, then ``@signature-params``."""
    lines: list[str] = []
    seen: set[tuple[Any, frozenset[tuple[str, Any]]]] = set()
    for component in covered:
        if not isinstance(component, Item):
            raise _BadComponent("covered components must be strings")
        identity = _identity(component)
        if identity in seen:
            raise _BadComponent("a component is covered twice")
        seen.add(identity)
        for value in _component_values(message, component):
            if not _BASE_VALUE.fullmatch(value):
                name = str(component.value)
                raise _Unresolvable(f'covered component "{name}" has invalid characters')
            lines.append(f"{_ser_item(component)}: {value}")
    lines.append(f'"@signature-params": {_ser_member(covered)}')
    return "\n".join(lines)


# --------------------------------------------------------------------------- signing


def _inner_list(components: Sequence[str], params: Mapping[str, int | str]) -> InnerList:
    covered = InnerList(list(components))
    for key, value in params.items():
        covered.params[key] = value
    return covered


def _sign(
    private_key: Ed25519PrivateKey, message: _Message, covered: InnerList, label: str
) -> dict[str, str]:
    base = _build_base(message, covered)
    signature = private_key.sign(base.encode("ascii"))
    return {
        "Signature-Input": _ser_dictionary({label: covered}),
        "Signature": _ser_dictionary({label: Item(signature)}),
    }


def _with_digest(headers: Mapping[str, str], digest: str) -> list[tuple[str, str]]:
    # The digest we return replaces any the caller had, so the base must see ours alone.
    kept = [(k, v) for k, v in headers.items() if k.lower() != "content-digest"]
    return [*kept, ("Content-Digest", digest)]


def sign_request(
    private_key: Ed25519PrivateKey,
    keyid: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    created: int,
    nonce: str,
    label: str = "sig1",
    expires: int | None = None,
    tag: str | None = None,
) -> dict[str, str]:
    """Sign a request; return the Content-Digest (if body), Signature-Input, Signature to add."""
    components = ["@method", "@target-uri"]
    added: dict[str, str] = {}
    all_headers: Iterable[tuple[str, str]] = headers.items()
    if body:
        if _Fields(headers).get("content-type") is None:
            raise ValueError("a request with a body must have a Content-Type to sign")
        added["Content-Digest"] = content_digest(body)
        all_headers = _with_digest(headers, added["Content-Digest"])
        components += ["content-digest", "content-type"]
    # The platform requires it of a POST: nobody between client and server may re-key a request.
    if _Fields(headers).get("idempotency-key") is not None:
        components.append("idempotency-key")
    params: dict[str, int | str] = {"created": created}
    if expires is not None:
        params["expires"] = expires
    params.update({"keyid": keyid, "nonce": nonce, "alg": ALG})
    if tag is not None:
        params["tag"] = tag
    message = _Message(_Fields(all_headers), method=method, target=_Target.parse(url))
    added.update(_sign(private_key, message, _inner_list(components, params), label))
    return added


def sign_response(
    private_key: Ed25519PrivateKey,
    keyid: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    created: int,
    label: str = "sig1",
    digest: str | None = None,
) -> dict[str, str]:
    """Sign a response; return the Content-Digest, Signature-Input and Signature to add."""
    # A ``digest`` given is that of a body not in hand (a file streamed from disk).
    if digest is None:
        digest = content_digest(body)
    fields = _Fields(_with_digest(headers, digest))
    components = ["@status"]
    # A bodiless response (204, 304) may have no Content-Type; it is covered whenever present.
    if fields.get("content-type") is not None:
        components.append("content-type")
    components.append("content-digest")
    params: dict[str, int | str] = {"created": created, "keyid": keyid, "alg": ALG}
    message = _Message(fields, status=status)
    signed = _sign(private_key, message, _inner_list(components, params), label)
    return {"Content-Digest": digest, **signed}


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerifiedSignature:
    """A verified signature; ``components`` are names with their parameters, e.g. ``@method``."""

    label: str
    keyid: str
    nonce: str | None
    created: int
    expires: int | None
    tag: str | None
    components: tuple[str, ...]


@dataclass(frozen=True)
class _Policy:
    required: tuple[str, ...]
    require_nonce: bool
    idempotency_key: bool = False
    """Whether ``idempotency-key`` must be covered too (a POST that carries one)."""


@dataclass(frozen=True)
class _Candidate:
    label: str
    covered: InnerList
    signature: bytes


def _parse_dictionary(value: str) -> Dictionary:
    try:
        return _parse_dict(value)
    except (ValueError, UnicodeEncodeError):
        raise SignatureMalformed("Signature-Input or Signature is not a valid dictionary") from None


def _signature_headers(fields: _Fields) -> tuple[Dictionary, Dictionary]:
    signature_input = fields.get("signature-input")
    signature = fields.get("signature")
    if not signature_input or not signature:
        raise SignatureMissing("Signature-Input and Signature headers are required")
    return _parse_dictionary(signature_input), _parse_dictionary(signature)


def _candidate(inputs: Dictionary, signatures: Dictionary, label: str) -> _Candidate:
    covered = inputs[label]
    if not isinstance(covered, InnerList):
        raise SignatureMalformed("Signature-Input member must be an inner list")
    signature = signatures.get(label)
    if signature is None:
        raise SignatureMalformed("Signature has no member for the Signature-Input label")
    if not isinstance(signature, Item) or not isinstance(signature.value, bytes):
        raise SignatureMalformed("Signature member must be a byte sequence")
    return _Candidate(label, covered, signature.value)


def _covers(covered: InnerList, name: str) -> bool:
    for component in covered:
        if not isinstance(component, Item) or component.value != name:
            continue
        params = set(component.params)
        # A digest member or re-serialisation still pins the body once we check the digest.
        if not params or (name == "content-digest" and params <= {"sf", "key"}):
            return True
    return False


def _check_policy(candidate: _Candidate, policy: _Policy) -> None:
    params = candidate.covered.params
    for name in ("created", "expires"):
        if name in params and type(params[name]) is not int:
            raise SignatureMalformed(f'signature parameter "{name}" must be an integer')
    for name in ("keyid", "nonce", "tag", "alg"):
        if name in params and type(params[name]) is not str:
            raise SignatureMalformed(f'signature parameter "{name}" must be a string')
    needed = ["created", "keyid"] + (["nonce"] if policy.require_nonce else [])
    absent = [name for name in needed if name not in params]
    if absent:
        raise SignatureMalformed(f"signature parameters required: {', '.join(absent)}")
    if "alg" in params and params["alg"] != ALG:
        raise SignatureMalformed(f'signature "alg" must be "{ALG}"')
    uncovered = [name for name in policy.required if not _covers(candidate.covered, name)]
    if uncovered:
        raise SignatureMalformed(f"signature must cover: {', '.join(uncovered)}")
    if policy.idempotency_key and not _covers(candidate.covered, "idempotency-key"):
        raise IdempotencyKeyUnsigned("signature must cover the Idempotency-Key of a POST")


def _select(inputs: Dictionary, signatures: Dictionary, policy: _Policy) -> _Candidate:
    first_error: SignatureMalformed | None = None
    for label in inputs:
        try:
            candidate = _candidate(inputs, signatures, label)
            _check_policy(candidate, policy)
        except SignatureMalformed as error:
            first_error = first_error or error
            continue
        return candidate
    raise first_error or SignatureMissing("no signature present")


def _crypto_verify(message: _Message, candidate: _Candidate, key: Ed25519PublicKey) -> None:
    try:
        base = _build_base(message, candidate.covered)
    except _BadComponent as error:
        raise SignatureMalformed(str(error)) from None
    except _Unresolvable as error:
        raise SignatureInvalid(str(error)) from None
    verify_signature_base(key, base, candidate.signature)


class SignedMessage:
    """A signature chosen under our policy, its key not yet known nor checked.

    ``parse_signed_request`` makes one; ``verify`` does the rest. Split so that a caller can look
    the key up (and burn the nonce) in the same database round trip.
    """

    __slots__ = ("_body", "_candidate", "_message", "keyid", "nonce")

    def __init__(self, message: _Message, body: bytes | None, candidate: _Candidate) -> None:
        self._message = message
        self._body = body
        self._candidate = candidate
        params = candidate.covered.params
        self.keyid: str = params["keyid"]
        self.nonce: str | None = params.get("nonce")

    def verify(
        self, key: Ed25519PublicKey | None, *, now: int, max_skew: int = 300
    ) -> VerifiedSignature:
        """Check, in this order: a known key, the time window, the signature, the body digest."""
        # Without its body (``parse_signed_head``) the digest is the caller's to check.
        if key is None:
            raise UnknownKey("the signature keyid is not a known key")
        candidate = self._candidate
        params = candidate.covered.params
        created: int = params["created"]
        if abs(now - created) > max_skew:
            raise ClockSkew(
                f"signature created time differs from server time by more than {max_skew} s",
                server_time=now,
            )
        expires: int | None = params.get("expires")
        if expires is not None and expires < now:
            raise SignatureExpired("signature has expired")
        # Cryptography before the digest: an unauthenticated sender learns nothing about the body.
        _crypto_verify(self._message, candidate, key)
        digest = self._message.fields.get("content-digest")
        if digest is not None and self._body is not None:
            verify_digest(digest, self._body)
        return VerifiedSignature(
            label=candidate.label,
            keyid=self.keyid,
            nonce=self.nonce,
            created=created,
            expires=expires,
            tag=params.get("tag"),
            components=tuple(_display(c) for c in candidate.covered if isinstance(c, Item)),
        )


def _signed(message: _Message, body: bytes | None, policy: _Policy) -> SignedMessage:
    inputs, signatures = _signature_headers(message.fields)
    return SignedMessage(message, body, _select(inputs, signatures, policy))


def _request_policy(message: _Message, has_body: bool) -> _Policy:
    required = ("@method", "@target-uri") + (("content-digest", "content-type") if has_body else ())
    keyed = message.method == "POST" and message.fields.get("idempotency-key") is not None
    return _Policy(required=required, require_nonce=True, idempotency_key=keyed)


def parse_signed_request(
    method: str, url: str, headers: Mapping[str, str], body: bytes
) -> SignedMessage:
    """The signature of a request that our policy accepts, to verify once its key is found.

    Raises SignatureMissing or SignatureMalformed, as ``verify_request`` would before it asks
    for the key.
    """
    message = _request_message(method, url, headers)
    return _signed(message, body, _request_policy(message, bool(body)))


def parse_signed_head(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    has_body: bool,
) -> SignedMessage:
    """As ``parse_signed_request``, from the head alone; the caller checks the body's digest."""
    message = _Message(_Fields(headers), method=method, target=_Target.parse(url))
    return _signed(message, None, _request_policy(message, has_body))


def verify_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    resolve_key: Callable[[str], Ed25519PublicKey | None],
    *,
    now: int,
    max_skew: int = 300,
) -> VerifiedSignature:
    """Verify a signed request under our policy; nonce replay is left to the caller."""
    signed = parse_signed_request(method, url, headers, body)
    return signed.verify(resolve_key(signed.keyid), now=now, max_skew=max_skew)


def verify_response(
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    resolve_key: Callable[[str], Ed25519PublicKey | None],
    *,
    now: int,
    max_skew: int = 300,
    request: RequestContext | None = None,
) -> VerifiedSignature:
    """Verify a signed response under our policy (``request`` resolves ``;req`` components).

    ``headers`` may be a mapping or the (name, value) pairs as received.
    """
    message = _response_message(status, headers, request)
    required = ["@status"]
    if message.fields.get("content-type") is not None:
        required.append("content-type")
    if body:
        required.append("content-digest")
    signed = _signed(message, body, _Policy(required=tuple(required), require_nonce=False))
    return signed.verify(resolve_key(signed.keyid), now=now, max_skew=max_skew)


# --------------------------------------------------------------------------- low level


def _base_for_label(message: _Message, label: str) -> str:
    fields = message.fields
    value = fields.get("signature-input")
    if not value:
        raise SignatureMissing("Signature-Input header is required")
    inputs = _parse_dictionary(value)
    covered = inputs.get(label)
    if not isinstance(covered, InnerList):
        raise SignatureMalformed("Signature-Input has no inner list for that label")
    try:
        return _build_base(message, covered)
    except _BadComponent as error:
        raise SignatureMalformed(str(error)) from None
    except _Unresolvable as error:
        raise SignatureInvalid(str(error)) from None


def request_signature_base(method: str, url: str, headers: Mapping[str, str], *, label: str) -> str:
    """The signature base of a request's ``label`` signature, without any policy."""
    return _base_for_label(_request_message(method, url, headers), label)


def response_signature_base(
    status: int,
    headers: Mapping[str, str],
    *,
    label: str,
    request: RequestContext | None = None,
) -> str:
    """The signature base of a response's ``label`` signature, without any policy."""
    return _base_for_label(_response_message(status, headers, request), label)


def verify_signature_base(key: Ed25519PublicKey, base: str | bytes, signature: bytes) -> None:
    """Raise SignatureInvalid unless ``signature`` is ``key``'s Ed25519 signature of ``base``."""
    data = base.encode("ascii") if isinstance(base, str) else base
    try:
        key.verify(signature, data)
    except _CryptoInvalidSignature:
        raise SignatureInvalid("signature does not verify") from None
