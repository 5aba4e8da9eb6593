"""Tests of clearing.web.signatures: RFC 9421 vectors, interop with http_message_signatures, rejections."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, MappingKeyResolver
from http_message_signatures.algorithms import ED25519

from clearing.core.errors import ClearingError
from clearing.web.signatures import (
    ClockSkew,
    DigestMismatch,
    InvalidPublicKey,
    NonceReplayed,
    RequestContext,
    SignatureError,
    SignatureExpired,
    SignatureInvalid,
    SignatureMalformed,
    SignatureMissing,
    UnknownKey,
    content_digest,
    load_public_key,
    public_jwk,
    request_signature_base,
    response_signature_base,
    sign_request,
    sign_response,
    verify_digest,
    verify_request,
    verify_response,
    verify_signature_base,
)

# --------------------------------------------------------------------------- RFC 9421 material

# RFC 9421 Appendix B.1.4, test-key-ed25519.
RFC_PUBLIC_PEM = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----
"""
RFC_PRIVATE_PEM = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""

# RFC 9421 Appendix B.2, test-request (POST /foo?param=Value&Pet=dog HTTP/1.1 on example.com).
RFC_METHOD = "POST"
RFC_URL = "https://example.com/foo?param=Value&Pet=dog"
RFC_BODY = b'{"hello": "world"}'
RFC_HEADERS = {
    "Host": "example.com",
    "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "Content-Type": "application/json",
    "Content-Digest": (
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEm"
        "THWXvJwew==:"
    ),
    "Content-Length": "18",
}

# RFC 9421 Appendix B.2.6, with the RFC 8792 line wrapping undone.
RFC_CREATED = 1618884473
RFC_SIGNATURE_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
RFC_SIGNATURE_B64 = (
    "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
)
RFC_BASE = "\n".join(
    [
        '"date": Tue, 20 Apr 2021 02:07:55 GMT',
        '"@method": POST',
        '"@path": /foo',
        '"@authority": example.com',
        '"content-type": application/json',
        '"content-length": 18',
        '"@signature-params": ("date" "@method" "@path" "@authority" "content-type"'
        ' "content-length");created=1618884473;keyid="test-key-ed25519"',
    ]
)


def rfc_signed_headers() -> dict[str, str]:
    return {
        **RFC_HEADERS,
        "Signature-Input": RFC_SIGNATURE_INPUT,
        "Signature": f"sig-b26=:{RFC_SIGNATURE_B64}:",
    }


def rfc_public_key() -> Ed25519PublicKey:
    return load_public_key(RFC_PUBLIC_PEM)


def test_rfc_b26_signature_base_is_reproduced_exactly() -> None:
    base = request_signature_base(RFC_METHOD, RFC_URL, rfc_signed_headers(), label="sig-b26")
    assert base == RFC_BASE


def test_rfc_b26_published_signature_verifies() -> None:
    base = request_signature_base(RFC_METHOD, RFC_URL, rfc_signed_headers(), label="sig-b26")
    verify_signature_base(rfc_public_key(), base, base64.b64decode(RFC_SIGNATURE_B64))


def test_rfc_b26_signature_is_reproduced_with_the_private_key() -> None:
    private = serialization.load_pem_private_key(RFC_PRIVATE_PEM, password=None)
    assert isinstance(private, Ed25519PrivateKey)
    # Ed25519 is deterministic, so the RFC's signature value must come out byte for byte.
    assert base64.b64encode(private.sign(RFC_BASE.encode())).decode() == RFC_SIGNATURE_B64


def test_rfc_b26_fails_on_a_tampered_base() -> None:
    tampered = RFC_BASE.replace("/foo", "/bar")
    with pytest.raises(SignatureInvalid):
        verify_signature_base(rfc_public_key(), tampered, base64.b64decode(RFC_SIGNATURE_B64))


def test_rfc_test_request_sha512_content_digest_matches_its_body() -> None:
    verify_digest(RFC_HEADERS["Content-Digest"], RFC_BODY)


def test_rfc_b26_is_refused_by_our_policy_for_lack_of_nonce() -> None:
    with pytest.raises(SignatureMalformed):
        verify_request(
            RFC_METHOD,
            RFC_URL,
            rfc_signed_headers(),
            RFC_BODY,
            lambda kid: rfc_public_key() if kid == "test-key-ed25519" else None,
            now=RFC_CREATED,
        )


# --------------------------------------------------------------------------- helpers

KEY = Ed25519PrivateKey.generate()
KID = "issuer-1/key-1"
URL = "https://clearing.example/v1/transfers?batch=7"
BODY = b'{"points": 1200, "member": "m-1"}'
NOW = 1_760_000_000


def resolver(
    keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> Callable[[str], Ed25519PublicKey | None]:
    table = dict(keys) if keys is not None else {KID: KEY.public_key()}
    return table.get


def signed_post(**overrides: Any) -> tuple[dict[str, str], bytes]:
    body = overrides.pop("body", BODY)
    headers = {"Content-Type": "application/json"}
    kwargs: dict[str, Any] = {"created": NOW, "nonce": "n-0001"}
    kwargs.update(overrides)
    headers.update(sign_request(KEY, KID, "POST", URL, headers, body, **kwargs))
    return headers, body


def sign_with_input(
    signature_input: str,
    headers: Mapping[str, str],
    *,
    method: str = "POST",
    url: str = URL,
    label: str = "sig1",
    key: Ed25519PrivateKey = KEY,
) -> dict[str, str]:
    """Sign an arbitrary Signature-Input member, as an independent client might."""
    out = {
        **headers,
        "Signature-Input": f"{label}={signature_input}",
        "Signature": f"{label}=:AA==:",
    }
    base = request_signature_base(method, url, out, label=label)
    out["Signature"] = f"{label}=:{base64.b64encode(key.sign(base.encode())).decode()}:"
    return out


def post_headers(body: bytes = BODY) -> dict[str, str]:
    return {"Content-Type": "application/json", "Content-Digest": content_digest(body)}


STANDARD_INPUT = (
    '("@method" "@target-uri" "content-digest" "content-type")'
    f';created={NOW};keyid="{KID}";nonce="n-1";alg="ed25519"'
)


# --------------------------------------------------------------------------- round trips


def test_content_digest_format() -> None:
    digest = content_digest(b"abc")
    assert digest == f"sha-256=:{base64.b64encode(hashlib.sha256(b'abc').digest()).decode()}:"


def test_sign_request_returns_the_headers_to_add() -> None:
    added = sign_request(
        KEY, KID, "POST", URL, {"content-type": "application/json"}, BODY, created=NOW, nonce="n"
    )
    assert set(added) == {"Content-Digest", "Signature-Input", "Signature"}
    assert added["Content-Digest"] == content_digest(BODY)
    assert added["Signature-Input"] == (
        'sig1=("@method" "@target-uri" "content-digest" "content-type")'
        f';created={NOW};keyid="{KID}";nonce="n";alg="ed25519"'
    )


def test_sign_request_without_body_adds_no_digest() -> None:
    added = sign_request(KEY, KID, "GET", URL, {}, b"", created=NOW, nonce="n")
    assert set(added) == {"Signature-Input", "Signature"}
    assert '("@method" "@target-uri")' in added["Signature-Input"]


def test_sign_request_with_body_needs_content_type() -> None:
    with pytest.raises(ValueError, match="Content-Type"):
        sign_request(KEY, KID, "POST", URL, {}, BODY, created=NOW, nonce="n")


def test_request_round_trip() -> None:
    headers, body = signed_post(expires=NOW + 60, tag="clearing", label="client")
    result = verify_request("POST", URL, headers, body, resolver(), now=NOW + 10)
    assert result.label == "client"
    assert result.keyid == KID
    assert result.nonce == "n-0001"
    assert result.created == NOW
    assert result.expires == NOW + 60
    assert result.tag == "clearing"
    assert result.components == ("@method", "@target-uri", "content-digest", "content-type")


def test_bodiless_request_round_trip() -> None:
    headers = sign_request(KEY, KID, "GET", URL, {}, b"", created=NOW, nonce="n-2")
    result = verify_request("GET", URL, headers, b"", resolver(), now=NOW)
    assert result.nonce == "n-2"
    assert result.tag is None
    assert result.expires is None


def test_header_lookup_is_case_insensitive() -> None:
    headers, body = signed_post()
    lowered = {name.lower(): value for name, value in headers.items()}
    upper = {name.upper(): value for name, value in headers.items()}
    assert verify_request("POST", URL, lowered, body, resolver(), now=NOW).keyid == KID
    assert verify_request("POST", URL, upper, body, resolver(), now=NOW).keyid == KID


def test_response_round_trip() -> None:
    headers = {"Content-Type": "application/json"}
    headers.update(sign_response(KEY, KID, 201, headers, b'{"ok":true}', created=NOW))
    result = verify_response(201, headers, b'{"ok":true}', resolver(), now=NOW + 5)
    assert result.components == ("@status", "content-type", "content-digest")
    assert result.nonce is None


def test_response_without_content_type_round_trip() -> None:
    headers = sign_response(KEY, KID, 204, {}, b"", created=NOW)
    assert headers["Content-Digest"] == content_digest(b"")
    assert verify_response(204, headers, b"", resolver(), now=NOW).components == (
        "@status",
        "content-digest",
    )


def test_response_status_is_covered() -> None:
    headers = {"Content-Type": "application/json"}
    headers.update(sign_response(KEY, KID, 200, headers, b"{}", created=NOW))
    with pytest.raises(SignatureInvalid):
        verify_response(500, headers, b"{}", resolver(), now=NOW)


def test_response_digest_is_checked() -> None:
    headers = {"Content-Type": "application/json"}
    headers.update(sign_response(KEY, KID, 200, headers, b"{}", created=NOW))
    with pytest.raises(DigestMismatch):
        verify_response(200, headers, b"[]", resolver(), now=NOW)


def test_response_may_cover_request_components() -> None:
    request = RequestContext("POST", URL, {"Idempotency-Key": "k-9"})
    si = (
        '("@status" "content-type" "content-digest" "@method";req "idempotency-key";req)'
        f';created={NOW};keyid="{KID}"'
    )
    headers = {
        "Content-Type": "application/json",
        "Content-Digest": content_digest(b"{}"),
        "Signature-Input": f"r={si}",
        "Signature": "r=:AA==:",
    }
    base = response_signature_base(200, headers, label="r", request=request)
    assert '"@method";req: POST' in base
    assert '"idempotency-key";req: k-9' in base
    headers["Signature"] = f"r=:{base64.b64encode(KEY.sign(base.encode())).decode()}:"
    result = verify_response(200, headers, b"{}", resolver(), now=NOW, request=request)
    assert "idempotency-key;req" in result.components
    with pytest.raises(SignatureInvalid):
        verify_response(200, headers, b"{}", resolver(), now=NOW)


# --------------------------------------------------------------------------- interop


@dataclass
class LibRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class LibResponse:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    request: LibRequest | None = None


def lib_keys() -> MappingKeyResolver:
    return MappingKeyResolver(public_keys={KID: KEY.public_key()}, private_keys={KID: KEY})


def test_interop_request_signed_by_http_message_signatures_is_accepted() -> None:
    now = int(time.time())
    request = LibRequest("POST", URL, {"Content-Type": "application/json"})
    HTTPMessageSigner(signature_algorithm=ED25519, key_resolver=lib_keys()).sign(
        request,
        key_id=KID,
        created=datetime.datetime.fromtimestamp(now, tz=datetime.UTC),
        nonce="lib-nonce-1",
        label="lib",
        covered_component_ids=("@method", "@target-uri", "content-digest", "content-type"),
        body=BODY,
    )
    assert "Content-Digest" in request.headers
    result = verify_request("POST", URL, request.headers, BODY, resolver(), now=now)
    assert (result.label, result.keyid, result.nonce, result.created) == (
        "lib",
        KID,
        "lib-nonce-1",
        now,
    )
    with pytest.raises(DigestMismatch):
        verify_request("POST", URL, request.headers, BODY + b" ", resolver(), now=now)


def test_interop_request_signed_by_us_is_accepted_by_http_message_signatures() -> None:
    now = int(time.time())
    headers = {"Content-Type": "application/json"}
    headers.update(sign_request(KEY, KID, "POST", URL, headers, BODY, created=now, nonce="ours-1"))
    verifier = HTTPMessageVerifier(signature_algorithm=ED25519, key_resolver=lib_keys())
    results = verifier.verify(
        LibRequest("POST", URL, headers),
        body=BODY,
        require_components=("@method", "@target-uri", "content-digest", "content-type"),
    )
    assert len(results) == 1
    assert results[0].nonce == "ours-1"
    assert results[0].body == BODY
    assert results[0].parameters["keyid"] == KID


def test_interop_response_signed_by_http_message_signatures_is_accepted() -> None:
    now = int(time.time())
    response = LibResponse(200, {"Content-Type": "application/json"})
    HTTPMessageSigner(signature_algorithm=ED25519, key_resolver=lib_keys()).sign(
        response,
        key_id=KID,
        created=datetime.datetime.fromtimestamp(now, tz=datetime.UTC),
        covered_component_ids=("@status", "content-type", "content-digest"),
        body=b'{"balance": 10}',
    )
    result = verify_response(200, response.headers, b'{"balance": 10}', resolver(), now=now)
    assert result.components == ("@status", "content-type", "content-digest")
    assert result.keyid == KID


def test_interop_response_signed_by_us_is_accepted_by_http_message_signatures() -> None:
    now = int(time.time())
    headers = {"Content-Type": "application/json"}
    headers.update(sign_response(KEY, KID, 200, headers, b'{"balance": 10}', created=now))
    verifier = HTTPMessageVerifier(signature_algorithm=ED25519, key_resolver=lib_keys())
    results = verifier.verify(
        LibResponse(200, headers),
        body=b'{"balance": 10}',
        require_components=("@status", "content-type", "content-digest"),
    )
    assert results[0].body == b'{"balance": 10}'


def test_interop_lib_request_with_extra_components_is_accepted() -> None:
    now = int(time.time())
    request = LibRequest(
        "POST",
        "https://clearing.example/v1/transfers?batch=7&Pet=dog",
        {
            "Content-Type": "application/json",
            "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
            "Content-Length": str(len(BODY)),
        },
    )
    HTTPMessageSigner(signature_algorithm=ED25519, key_resolver=lib_keys()).sign(
        request,
        key_id=KID,
        created=datetime.datetime.fromtimestamp(now, tz=datetime.UTC),
        nonce="lib-2",
        covered_component_ids=(
            "@method",
            "@authority",
            "@scheme",
            "@path",
            "@query",
            "@request-target",
            '"@query-param";name="Pet"',
            "date",
            "content-length",
            "content-type",
            '"content-digest";sf',
            '"content-digest";key="sha-256"',
            "@target-uri",
        ),
        body=BODY,
    )
    # The server may see the URL in another spelling; derived components are normalised.
    url = "HTTPS://Clearing.Example:443/v1/transfers?batch=7&Pet=dog"
    result = verify_request("POST", url, request.headers, BODY, resolver(), now=now)
    assert result.nonce == "lib-2"
    assert 'content-digest;key="sha-256"' in result.components
    assert '@query-param;name="Pet"' in result.components


# --------------------------------------------------------------------------- rejections


def rejection(exc_type: type[SignatureError], call: Callable[[], object]) -> SignatureError:
    with pytest.raises(exc_type) as info:
        call()
    error = info.value
    assert error.status == 401
    assert isinstance(error, ClearingError)
    return error


def assert_no_secret(error: SignatureError, headers: Mapping[str, str]) -> None:
    rendered = json.dumps(error.problem()) + str(error)
    for name, value in headers.items():
        if name.lower() == "signature":
            assert value.split("=:", 1)[1].rstrip(":") not in rendered


def test_tampered_body_is_digest_mismatch() -> None:
    headers, _ = signed_post()
    error = rejection(
        DigestMismatch,
        lambda: verify_request("POST", URL, headers, BODY + b"x", resolver(), now=NOW),
    )
    assert error.code == "digest_mismatch"
    assert_no_secret(error, headers)


def test_tampered_path_is_signature_invalid() -> None:
    headers, body = signed_post()
    other = URL.replace("/transfers", "/refunds")
    error = rejection(
        SignatureInvalid, lambda: verify_request("POST", other, headers, body, resolver(), now=NOW)
    )
    assert error.code == "signature_invalid"
    assert_no_secret(error, headers)


def test_tampered_query_is_signature_invalid() -> None:
    headers, body = signed_post()
    rejection(
        SignatureInvalid,
        lambda: verify_request("POST", URL + "&x=1", headers, body, resolver(), now=NOW),
    )


def test_tampered_method_is_signature_invalid() -> None:
    headers, body = signed_post()
    rejection(
        SignatureInvalid, lambda: verify_request("PUT", URL, headers, body, resolver(), now=NOW)
    )


def test_tampered_digest_and_body_is_signature_invalid() -> None:
    headers, _ = signed_post()
    headers["Content-Digest"] = content_digest(b"forged")
    rejection(
        SignatureInvalid,
        lambda: verify_request("POST", URL, headers, b"forged", resolver(), now=NOW),
    )


def test_old_signature_is_clock_skew_with_server_time() -> None:
    headers, body = signed_post(created=NOW - 301)
    error = rejection(
        ClockSkew, lambda: verify_request("POST", URL, headers, body, resolver(), now=NOW)
    )
    assert error.code == "clock_skew"
    assert error.problem()["server_time"] == NOW
    assert_no_secret(error, headers)
    # 300 s is still inside the default window.
    headers, body = signed_post(created=NOW - 300)
    assert verify_request("POST", URL, headers, body, resolver(), now=NOW).created == NOW - 300


def test_future_signature_is_clock_skew() -> None:
    headers, body = signed_post(created=NOW + 301)
    rejection(ClockSkew, lambda: verify_request("POST", URL, headers, body, resolver(), now=NOW))


def test_expired_signature() -> None:
    headers, body = signed_post(created=NOW - 10, expires=NOW - 1)
    error = rejection(
        SignatureExpired, lambda: verify_request("POST", URL, headers, body, resolver(), now=NOW)
    )
    assert error.code == "signature_expired"
    assert_no_secret(error, headers)


def test_unknown_key() -> None:
    headers, body = signed_post()
    error = rejection(
        UnknownKey, lambda: verify_request("POST", URL, headers, body, resolver({}), now=NOW)
    )
    assert error.code == "unknown_key"
    assert_no_secret(error, headers)


def test_wrong_key_is_signature_invalid() -> None:
    headers, body = signed_post()
    other = Ed25519PrivateKey.generate().public_key()
    rejection(
        SignatureInvalid,
        lambda: verify_request("POST", URL, headers, body, resolver({KID: other}), now=NOW),
    )


@pytest.mark.parametrize("dropped", ["Signature", "Signature-Input", "both"])
def test_missing_signature_headers(dropped: str) -> None:
    headers, body = signed_post()
    for name in ("Signature", "Signature-Input"):
        if dropped in (name, "both"):
            del headers[name]
    error = rejection(
        SignatureMissing, lambda: verify_request("POST", URL, headers, body, resolver(), now=NOW)
    )
    assert error.code == "signature_missing"


@pytest.mark.parametrize(
    ("signature_input", "signature"),
    [
        ("garbage(((", "sig1=:AA==:"),
        ('sig1=("@method" "@target-uri");created=1', "sig1=not base64 ::"),
        ('sig1="@method";created=1;keyid="k";nonce="n"', "sig1=:AA==:"),
        ('sig1=("@method" "@target-uri");created=1;keyid="k";nonce="n"', "sig1=(1 2)"),
        ('sig1=("@method" "@target-uri");created=1;keyid="k";nonce="n"', "other=:AA==:"),
        ('sig1=("@method" "@target-uri");created=1;keyid="k";nonce="n"', "sig1=:AA==:,"),
        ('sig1=("@method" "@target-uri");created="1";keyid="k";nonce="n"', "sig1=:AA==:"),
        ('sig1=("@method" "@target-uri");created=1;keyid=k;nonce="n"', "sig1=:AA==:"),
        ('sig1=("@method" "@target-uri");created=1;keyid="k";nonce="\u00e9"', "sig1=:AA==:"),
    ],
)
def test_garbage_is_signature_malformed(signature_input: str, signature: str) -> None:
    headers = {"Signature-Input": signature_input, "Signature": signature}
    error = rejection(
        SignatureMalformed,
        lambda: verify_request("GET", URL, headers, b"", resolver(), now=NOW),
    )
    assert error.code == "signature_malformed"


def test_alg_other_than_ed25519_is_malformed() -> None:
    si = f'("@method" "@target-uri");created={NOW};keyid="{KID}";nonce="n";alg="rsa-pss-sha512"'
    headers = sign_with_input(si, {}, method="GET")
    error = rejection(
        SignatureMalformed, lambda: verify_request("GET", URL, headers, b"", resolver(), now=NOW)
    )
    assert "ed25519" in error.detail
    assert_no_secret(error, headers)


@pytest.mark.parametrize("param", ["nonce", "keyid", "created"])
def test_missing_required_parameter_is_malformed(param: str) -> None:
    params = {"created": str(NOW), "keyid": f'"{KID}"', "nonce": '"n-1"'}
    del params[param]
    si = '("@method" "@target-uri")' + "".join(f";{k}={v}" for k, v in params.items())
    headers = sign_with_input(si, {}, method="GET")
    error = rejection(
        SignatureMalformed, lambda: verify_request("GET", URL, headers, b"", resolver(), now=NOW)
    )
    assert param in error.detail
    assert_no_secret(error, headers)


@pytest.mark.parametrize(
    "covered",
    [
        '("@target-uri" "content-digest" "content-type")',
        '("@method" "content-digest" "content-type")',
        '("@method" "@target-uri" "content-type")',
        '("@method" "@target-uri" "content-digest")',
        '("@method" "@path" "@authority" "content-digest" "content-type")',
    ],
)
def test_missing_required_component_is_malformed(covered: str) -> None:
    si = f'{covered};created={NOW};keyid="{KID}";nonce="n"'
    headers = sign_with_input(si, post_headers())
    error = rejection(
        SignatureMalformed, lambda: verify_request("POST", URL, headers, BODY, resolver(), now=NOW)
    )
    assert "cover" in error.detail


def test_body_without_content_digest_coverage_is_malformed_even_if_header_present() -> None:
    si = f'("@method" "@target-uri" "content-type");created={NOW};keyid="{KID}";nonce="n"'
    headers = sign_with_input(si, post_headers())
    rejection(
        SignatureMalformed, lambda: verify_request("POST", URL, headers, BODY, resolver(), now=NOW)
    )


def test_covered_header_absent_is_invalid() -> None:
    si = f'("@method" "@target-uri" "date");created={NOW};keyid="{KID}";nonce="n"'
    headers = sign_with_input(si, {"Date": "Tue, 20 Apr 2021 02:07:55 GMT"}, method="GET")
    assert verify_request("GET", URL, headers, b"", resolver(), now=NOW).components[-1] == "date"
    del headers["Date"]
    error = rejection(
        SignatureInvalid, lambda: verify_request("GET", URL, headers, b"", resolver(), now=NOW)
    )
    assert_no_secret(error, headers)


@pytest.mark.parametrize(
    "covered", ['("@method" "@target-uri" "@method")', '("@method" "@target-uri" "Date")']
)
def test_duplicate_or_uppercase_components_are_malformed(covered: str) -> None:
    si = f'{covered};created={NOW};keyid="{KID}";nonce="n"'
    headers = {"Date": "x", "Signature-Input": f"sig1={si}", "Signature": "sig1=:AA==:"}
    rejection(
        SignatureMalformed, lambda: verify_request("GET", URL, headers, b"", resolver(), now=NOW)
    )


def test_unknown_digest_algorithms_are_digest_mismatch() -> None:
    si = STANDARD_INPUT
    headers = {"Content-Type": "application/json", "Content-Digest": "md5=:AAAA:, crc=:AA==:"}
    signed = sign_with_input(si, headers)
    error = rejection(
        DigestMismatch, lambda: verify_request("POST", URL, signed, BODY, resolver(), now=NOW)
    )
    assert "sha-256" in error.detail


def test_sha512_digest_is_accepted_and_every_known_member_checked() -> None:
    sha512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
    headers = {"Content-Type": "application/json", "Content-Digest": f"sha-512=:{sha512}:"}
    signed = sign_with_input(STANDARD_INPUT, headers)
    assert verify_request("POST", URL, signed, BODY, resolver(), now=NOW).nonce == "n-1"
    both = {**headers, "Content-Digest": f"sha-512=:{sha512}:, {content_digest(b'other')}"}
    signed = sign_with_input(STANDARD_INPUT, both)
    rejection(
        DigestMismatch, lambda: verify_request("POST", URL, signed, BODY, resolver(), now=NOW)
    )
    with_unknown = {**headers, "Content-Digest": f"unixsum=:AA==:, sha-512=:{sha512}:"}
    signed = sign_with_input(STANDARD_INPUT, with_unknown)
    assert verify_request("POST", URL, signed, BODY, resolver(), now=NOW).keyid == KID


def test_digest_of_empty_body_may_be_covered_and_is_checked() -> None:
    si = f'("@method" "@target-uri" "content-digest");created={NOW};keyid="{KID}";nonce="n"'
    signed = sign_with_input(si, {"Content-Digest": content_digest(b"")}, method="DELETE")
    result = verify_request("DELETE", URL, signed, b"", resolver(), now=NOW)
    assert "content-digest" in result.components
    wrong = sign_with_input(si, {"Content-Digest": content_digest(b"x")}, method="DELETE")
    rejection(
        DigestMismatch, lambda: verify_request("DELETE", URL, wrong, b"", resolver(), now=NOW)
    )


def test_uncovered_digest_header_is_still_checked() -> None:
    headers = sign_request(KEY, KID, "GET", URL, {}, b"", created=NOW, nonce="n")
    headers["Content-Digest"] = content_digest(b"smuggled")
    rejection(DigestMismatch, lambda: verify_request("GET", URL, headers, b"", resolver(), now=NOW))


def test_no_error_detail_ever_contains_the_signature_value() -> None:
    headers, body = signed_post()
    signature_value = headers["Signature"].split("=:", 1)[1].rstrip(":")
    attempts: list[Callable[[], object]] = [
        lambda: verify_request("POST", URL, headers, body + b"!", resolver(), now=NOW),
        lambda: verify_request("PUT", URL, headers, body, resolver(), now=NOW),
        lambda: verify_request("POST", URL, headers, body, resolver(), now=NOW + 999),
        lambda: verify_request("POST", URL, headers, body, resolver({}), now=NOW),
        lambda: verify_request("POST", URL, headers, b"", resolver(), now=NOW),
        lambda: verify_request(
            "POST",
            URL,
            {**headers, "Signature": "sig1=:" + signature_value},
            body,
            resolver(),
            now=NOW,
        ),
    ]
    for attempt in attempts:
        with pytest.raises(SignatureError) as info:
            attempt()
        rendered = json.dumps(info.value.problem()) + repr(info.value)
        assert signature_value not in rendered
        assert "signature-params" not in rendered


# --------------------------------------------------------------------------- components


def test_extra_components_and_normalisation() -> None:
    url = "HTTPS://Clearing.Example:443/v1/transfers?batch=7&Pet=dog&q=a%20b+c"
    headers = {
        "Content-Type": "application/json",
        "Content-Digest": content_digest(BODY),
        "Content-Length": str(len(BODY)),
        "Date": " Tue, 20 Apr 2021 02:07:55 GMT ",
        "Example-Dict": " a=1,    b=2;x=1;y=2, c=(a   b   c)",
        "X-Multi": "one,\r\n two",
    }
    si = (
        '("@method" "@target-uri" "@authority" "@scheme" "@path" "@query" "@request-target"'
        ' "@query-param";name="Pet" "@query-param";name="q" "date" "content-length"'
        ' "content-type" "content-digest";sf "content-digest";key="sha-256" "x-multi"'
        ' "example-dict";key="b" "x-multi";bs)'
        f';nonce="n";keyid="{KID}";created={NOW};custom=?1'
    )
    signed = sign_with_input(si, headers, url=url)
    base = request_signature_base("POST", url, signed, label="sig1").split("\n")
    assert base[:16] == [
        '"@method": POST',
        '"@target-uri": https://clearing.example/v1/transfers?batch=7&Pet=dog&q=a%20b+c',
        '"@authority": clearing.example',
        '"@scheme": https',
        '"@path": /v1/transfers',
        '"@query": ?batch=7&Pet=dog&q=a%20b+c',
        '"@request-target": /v1/transfers?batch=7&Pet=dog&q=a%20b+c',
        '"@query-param";name="Pet": dog',
        '"@query-param";name="q": a%20b%20c',
        '"date": Tue, 20 Apr 2021 02:07:55 GMT',
        f'"content-length": {len(BODY)}',
        '"content-type": application/json',
        f'"content-digest";sf: {content_digest(BODY)}',
        f'"content-digest";key="sha-256": {content_digest(BODY).removeprefix("sha-256=")}',
        '"x-multi": one, two',
        '"example-dict";key="b": 2;x=1;y=2',
    ]
    assert base[16] == '"x-multi";bs: :b25lLCB0d28=:'
    # @signature-params is the received member re-serialised, parameters in received order.
    assert base[17].startswith('"@signature-params": ("@method"')
    assert base[17].endswith(f';nonce="n";keyid="{KID}";created={NOW};custom')
    result = verify_request("POST", url, signed, BODY, resolver(), now=NOW)
    assert '@query-param;name="Pet"' in result.components


def test_authority_keeps_non_default_port_and_defaults_empty_path() -> None:
    si = (
        '("@method" "@target-uri" "@authority" "@path" "@query");'
        f'created={NOW};keyid="{KID}";nonce="n"'
    )
    signed = sign_with_input(si, {}, method="GET", url="http://Example.COM:8080")
    base = request_signature_base("GET", "http://Example.COM:8080", signed, label="sig1")
    assert base.split("\n")[:5] == [
        '"@method": GET',
        '"@target-uri": http://example.com:8080/',
        '"@authority": example.com:8080',
        '"@path": /',
        '"@query": ?',
    ]
    assert verify_request("GET", "http://example.com:8080/", signed, b"", resolver(), now=NOW)


def test_absent_query_param_is_invalid() -> None:
    si = f'("@method" "@target-uri" "@query-param";name="x");created={NOW};keyid="{KID}";nonce="n"'
    headers = {"Signature-Input": f"sig1={si}", "Signature": "sig1=:AA==:"}
    rejection(
        SignatureInvalid, lambda: verify_request("GET", URL, headers, b"", resolver(), now=NOW)
    )


def test_request_cannot_cover_status() -> None:
    si = f'("@method" "@target-uri" "@status");created={NOW};keyid="{KID}";nonce="n"'
    headers = {"Signature-Input": f"sig1={si}", "Signature": "sig1=:AA==:"}
    rejection(
        SignatureMalformed, lambda: verify_request("GET", URL, headers, b"", resolver(), now=NOW)
    )


def test_first_label_satisfying_policy_is_verified() -> None:
    ours = sign_with_input(STANDARD_INPUT, post_headers(), label="ours")
    foreign_input = f'foreign=("@method");created={NOW};keyid="proxy";alg="rsa-pss-sha512"'
    headers = {
        **ours,
        "Signature-Input": f"{foreign_input}, {ours['Signature-Input']}",
        "Signature": f"foreign=:AAAA:, {ours['Signature']}",
    }
    result = verify_request("POST", URL, headers, BODY, resolver(), now=NOW)
    assert result.label == "ours"
    only_foreign = {**headers, "Signature-Input": foreign_input, "Signature": "foreign=:AAAA:"}
    rejection(
        SignatureMalformed,
        lambda: verify_request("POST", URL, only_foreign, BODY, resolver(), now=NOW),
    )


def test_first_of_two_acceptable_labels_wins_even_if_it_fails() -> None:
    good = sign_with_input(STANDARD_INPUT, post_headers(), label="b")
    bad_input = STANDARD_INPUT.replace('nonce="n-1"', 'nonce="n-0"')
    headers = {
        **good,
        "Signature-Input": f"a={bad_input}, {good['Signature-Input']}",
        "Signature": f"a=:{'A' * 86}==:, {good['Signature']}",
    }
    rejection(
        SignatureInvalid, lambda: verify_request("POST", URL, headers, BODY, resolver(), now=NOW)
    )


# --------------------------------------------------------------------------- keys


def test_pem_round_trip() -> None:
    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for data in (pem, pem.decode()):
        loaded = load_public_key(data)
        assert loaded.public_bytes_raw() == KEY.public_key().public_bytes_raw()


def test_jwk_round_trip() -> None:
    jwk = public_jwk(KEY.public_key(), KID)
    assert jwk["kty"] == "OKP"
    assert jwk["crv"] == "Ed25519"
    assert (jwk["kid"], jwk["alg"], jwk["use"]) == (KID, "EdDSA", "sig")
    assert "=" not in jwk["x"]
    loaded = load_public_key(json.dumps(jwk))
    assert loaded.public_bytes_raw() == KEY.public_key().public_bytes_raw()


def test_rfc_jwk_matches_rfc_pem() -> None:
    # RFC 9421 Appendix B.1.4 gives the same key as a JWK.
    jwk = '{"kty": "OKP", "crv": "Ed25519", "kid": "test-key-ed25519",'
    jwk += ' "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}'
    assert load_public_key(jwk).public_bytes_raw() == rfc_public_key().public_bytes_raw()


@pytest.mark.parametrize(
    "data",
    [
        "",
        "garbage",
        b"\x00\x01\x02",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        RFC_PRIVATE_PEM,
        "{not json",
        "[1, 2]",
        '{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}',
        '{"kty": "OKP", "crv": "X25519", "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}',
        '{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}',
        '{"kty": "OKP", "crv": "Ed25519", "x": "not base64!"}',
        '{"kty": "OKP", "crv": "Ed25519"}',
        '{"kty": "OKP", "crv": "Ed25519", "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs",'
        ' "d": "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"}',
    ],
)
def test_garbage_key_is_rejected(data: str | bytes) -> None:
    with pytest.raises(InvalidPublicKey) as info:
        load_public_key(data)
    assert info.value.code == "invalid_public_key"
    assert info.value.status == 422
    assert "n4Ni" not in info.value.detail


def test_rsa_key_is_rejected() -> None:
    rsa_pem = (
        generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(InvalidPublicKey, match="Ed25519"):
        load_public_key(rsa_pem)


def test_error_codes_are_stable() -> None:
    codes = {
        cls.code
        for cls in (
            SignatureMissing,
            SignatureMalformed,
            SignatureInvalid,
            UnknownKey,
            SignatureExpired,
            ClockSkew,
            DigestMismatch,
        )
    }
    codes.add(NonceReplayed.code)
    assert codes == {
        "signature_missing",
        "signature_malformed",
        "signature_invalid",
        "unknown_key",
        "signature_expired",
        "clock_skew",
        "nonce_replayed",
        "digest_mismatch",
    }
    assert NonceReplayed("replayed").status == 401
