"""Who may call: every 401 code, suspended organisations, operator endpoints, key rotation,
and interoperability with an independent RFC 9421 implementation (http_message_signatures)."""

from __future__ import annotations

import datetime
import json
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, MappingKeyResolver
from http_message_signatures.algorithms import ED25519
from starlette.testclient import TestClient

from clearing.app.factory import create_app
from clearing.sdk.client import ApiError
from clearing.web.signatures import load_public_key, public_jwk, sign_request, verify_response
from tests.api.api_support import (
    BASE,
    Party,
    World,
    assert_problem,
    make_settings,
    public_pem,
    signed,
)


def test_unsigned_request_is_signature_missing(world: World, http: TestClient) -> None:
    assert_problem(http.get("/v1/programs"), 401, "signature_missing")


def test_malformed_signature_input(world: World, http: TestClient) -> None:
    response = http.get(
        "/v1/programs", headers={"Signature-Input": "sig1=(((", "Signature": "sig1=:AA==:"}
    )
    assert_problem(response, 401, "signature_malformed")


def test_missing_nonce_is_malformed(world: World, http: TestClient) -> None:
    response = signed(http, world.bank, "GET", "/v1/programs")
    headers = dict(response.request.headers)
    headers["signature-input"] = headers["signature-input"].replace(';nonce="', ';other="')
    assert_problem(http.get("/v1/programs", headers=headers), 401, "signature_malformed")


def test_changed_signature_parameters_are_signature_invalid(world: World, http: TestClient) -> None:
    body = {"program": "BANK", "external_id": "alice", "points": 1}
    first = signed(http, world.bank, "POST", "/v1/accruals", body)
    assert first.status_code == 201
    headers = dict(first.request.headers)
    # Same signature over a changed nonce: the signature base differs, so it does not verify.
    headers["signature-input"] = headers["signature-input"].replace('nonce="', 'nonce="x')
    response = http.post("/v1/accruals", headers=headers, content=first.request.content)
    assert_problem(response, 401, "signature_invalid")


def test_digest_mismatch_on_fresh_nonce(world: World, http: TestClient) -> None:
    body = b'{"program":"BANK","external_id":"alice","points":1}'
    headers = {"Content-Type": "application/json", "Idempotency-Key": "k1"}
    added = sign_request(
        world.bank.key,
        world.bank.keyid,
        "POST",
        BASE + "/v1/accruals",
        headers,
        body,
        created=int(time.time()),
        nonce="fresh-nonce-1",
    )
    tampered = body.replace(b":1}", b":9}")
    response = http.post("/v1/accruals", headers={**headers, **added}, content=tampered)
    # The signature covers the digest header, which still matches the original body; the
    # signature verifies, then the digest check catches the swapped body.
    assert_problem(response, 401, "digest_mismatch")


def test_wrong_key_is_signature_invalid(world: World, http: TestClient) -> None:
    impostor = Party(world.bank.org_id, world.bank.keyid, Ed25519PrivateKey.generate())
    assert_problem(signed(http, impostor, "GET", "/v1/programs"), 401, "signature_invalid")


def test_unknown_and_revoked_keys(world: World, http: TestClient) -> None:
    stranger = Party(world.bank.org_id, "no-such-key", Ed25519PrivateKey.generate())
    assert_problem(signed(http, stranger, "GET", "/v1/programs"), 401, "unknown_key")

    # Rotation: a second key works alongside the first; revoking the first leaves the second.
    second_key = Ed25519PrivateKey.generate()
    with world.client(world.operator) as op:
        added = op.request(
            "POST",
            f"/v1/organizations/{world.bank.org_id}/keys",
            {"public_key": public_pem(second_key)},
        )
        second = Party(world.bank.org_id, added["keyid"], second_key)
        assert signed(http, second, "GET", "/v1/programs").status_code == 200
        assert signed(http, world.bank, "GET", "/v1/programs").status_code == 200
        revoked = op.request(
            "DELETE", f"/v1/organizations/{world.bank.org_id}/keys/{world.bank.keyid}"
        )
        assert revoked["status"] == "revoked"
        listed = op.request("GET", f"/v1/organizations/{world.bank.org_id}/keys")
        assert {k["status"] for k in listed} == {"active", "revoked"}
    assert_problem(signed(http, world.bank, "GET", "/v1/programs"), 401, "unknown_key")
    assert signed(http, second, "GET", "/v1/programs").status_code == 200


def test_clock_skew_reports_server_time(world: World, http: TestClient) -> None:
    body = assert_problem(
        signed(http, world.bank, "GET", "/v1/programs", created=int(time.time()) - 301),
        401,
        "clock_skew",
    )
    assert abs(int(str(body["server_time"])) - time.time()) < 5
    assert_problem(
        signed(http, world.bank, "GET", "/v1/programs", created=int(time.time()) + 400),
        401,
        "clock_skew",
    )


def test_expired_signature(world: World, http: TestClient) -> None:
    response = signed(
        http,
        world.bank,
        "GET",
        "/v1/programs",
        created=int(time.time()) - 10,
        expires=int(time.time()) - 5,
    )
    assert_problem(response, 401, "signature_expired")


def test_nonce_replay_is_refused_across_two_app_instances(
    world: World, http: TestClient, db_url: str, tmp_path: Path
) -> None:
    first = signed(http, world.bank, "GET", "/v1/programs", nonce="once-only")
    assert first.status_code == 200
    # A second process on the same database (another uvicorn worker, or after a restart).
    other_app = create_app(make_settings(db_url, tmp_path / "other"))
    try:
        other = TestClient(other_app, base_url=BASE)
        replay = other.get("/v1/programs", headers=dict(first.request.headers))
        assert_problem(replay, 401, "nonce_replayed")
    finally:
        other_app.state.engine.dispose()
    # The same nonce under another key is somebody else's nonce.
    assert signed(http, world.shop, "GET", "/v1/programs", nonce="once-only").status_code == 200


def test_a_failed_request_still_burns_its_nonce(world: World, http: TestClient) -> None:
    body = {
        "program": "BANK",
        "external_id": "alice",
        "order_total": 100,
        "points_amount": 100,
        "payment_token": world.payment_token(),
    }
    declined = signed(http, world.shop, "POST", "/v1/checkouts", body, nonce="declined")
    assert_problem(declined, 409, "insufficient_points")
    with world.client(world.bank) as bank:
        bank.accrue("BANK", "alice", 1000)
    replay = http.post(
        "/v1/checkouts", headers=dict(declined.request.headers), content=declined.request.content
    )
    assert_problem(replay, 401, "nonce_replayed")


def test_suspended_organisation_is_refused(world: World, http: TestClient) -> None:
    with world.client(world.operator) as op:
        op.request("PATCH", f"/v1/organizations/{world.shop.org_id}", {"status": "suspended"})
    assert_problem(signed(http, world.shop, "GET", "/v1/programs"), 403, "organisation_suspended")
    with world.client(world.operator) as op:
        op.request("PATCH", f"/v1/organizations/{world.shop.org_id}", {"status": "active"})
    assert signed(http, world.shop, "GET", "/v1/programs").status_code == 200


def test_operator_endpoints_need_a_platform_key(world: World) -> None:
    with world.client(world.bank) as bank:
        for method, path, body in [
            ("POST", "/v1/organizations", {"kind": "issuer", "name": "X", "currency": "CNY"}),
            ("GET", f"/v1/organizations/{world.shop.org_id}", None),
            ("PATCH", f"/v1/organizations/{world.shop.org_id}", {"status": "suspended"}),
            ("POST", f"/v1/organizations/{world.bank.org_id}/keys", {"public_key": "x"}),
            ("DELETE", f"/v1/organizations/{world.bank.org_id}/keys/{world.bank.keyid}", None),
        ]:
            with pytest.raises(ApiError) as error:
                bank.request(method, path, body)
            assert (error.value.status, error.value.code) == (403, "operator_only")


def test_operator_sets_fees_and_terms(world: World) -> None:
    with world.client(world.operator) as op:
        org = op.request(
            "PATCH",
            f"/v1/organizations/{world.shop.org_id}",
            {"default_fee_rate": "0.02", "terms": [{"program": "BANK", "fee_rate": "0.01"}]},
        )
        assert Decimal(org["default_fee_rate"]) == Decimal("0.02")
        with pytest.raises(ApiError) as error:
            op.request(
                "POST", f"/v1/organizations/{world.shop.org_id}/keys", {"public_key": "junk"}
            )
        assert (error.value.status, error.value.code) == (422, "invalid_public_key")
        jwk_key = Ed25519PrivateKey.generate()
        added = op.request(
            "POST",
            f"/v1/organizations/{world.shop.org_id}/keys",
            {
                "public_key": {
                    k: v for k, v in public_jwk(jwk_key.public_key(), "k").items() if k != "kid"
                }
            },
        )
        with pytest.raises(ApiError) as error:
            op.request(
                "POST",
                f"/v1/organizations/{world.other_shop.org_id}/keys",
                {"public_key": public_pem(jwk_key)},
            )
        assert (error.value.status, error.value.code) == (409, "key_exists")
        assert added["jwk"]["kid"] == added["keyid"]
    with world.client(world.shop) as shop:
        shop.request("GET", "/v1/programs")
    with world.client(world.bank) as bank:
        bank.accrue("BANK", "alice", 1000)
    with world.client(world.shop) as shop:
        token = world.payment_token()
        checkout = shop.authorise("BANK", "alice", 1000, 1000, payment_token=token)
        assert Decimal(checkout["fee_rate"]) == Decimal("0.01")


def test_platform_keys_need_no_signature_and_verify_responses(
    world: World, http: TestClient
) -> None:
    jwks = http.get("/v1/platform/keys")
    assert jwks.status_code == 200
    (jwk,) = jwks.json()["keys"]
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    assert "d" not in jwk
    key = load_public_key(json.dumps(jwk))
    response = signed(http, world.bank, "GET", "/v1/programs")
    verified = verify_response(
        response.status_code,
        dict(response.headers),
        response.content,
        {jwk["kid"]: key}.get,
        now=int(time.time()),
    )
    assert verified.components == ("@status", "content-type", "content-digest")


def test_platform_key_file_is_private(world: World, tmp_path: Path) -> None:
    path = tmp_path / "keys" / "platform.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    again = create_app(make_settings("sqlite://", tmp_path))
    assert again.state.platform_key.keyid == world.app.state.platform_key.keyid
    assert "PRIVATE" not in repr(again.state.platform_key)


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


def test_request_signed_by_http_message_signatures_is_accepted(
    world: World, http: TestClient
) -> None:
    body = json.dumps({"program": "BANK", "external_id": "alice", "points": 7}).encode()
    request = LibRequest(
        "POST",
        BASE + "/v1/accruals",
        {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())},
    )
    resolver = MappingKeyResolver(
        public_keys={world.bank.keyid: world.bank.key.public_key()},
        private_keys={world.bank.keyid: world.bank.key},
    )
    HTTPMessageSigner(signature_algorithm=ED25519, key_resolver=resolver).sign(
        request,
        key_id=world.bank.keyid,
        created=datetime.datetime.now(tz=datetime.UTC),
        nonce=uuid.uuid4().hex,
        label="lib",
        covered_component_ids=(
            "@method",
            "@target-uri",
            "content-digest",
            "content-type",
            "idempotency-key",
        ),
        body=body,
    )
    response = http.post("/v1/accruals", headers=request.headers, content=body)
    assert response.status_code == 201, response.text
    assert response.json()["points"] == 7

    # The platform's response verifies with the same independent library.
    jwk = http.get("/v1/platform/keys").json()["keys"][0]
    platform = MappingKeyResolver(
        public_keys={jwk["kid"]: load_public_key(json.dumps(jwk))}, private_keys={}
    )
    results = HTTPMessageVerifier(signature_algorithm=ED25519, key_resolver=platform).verify(
        LibResponse(response.status_code, dict(response.headers)),
        body=response.content,
        require_components=("@status", "content-type", "content-digest"),
    )
    assert results[0].parameters["keyid"] == jwk["kid"]
    assert results[0].body == response.content
