"""The authentication fast path: a cache of parsed keys that never outlives a revocation, nonces
burnt in one committed statement only for requests whose signature verified, and pruning."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, update
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.models import SeenNonce
from clearing.core.timeutil import utcnow
from clearing.web import auth
from issuers.models import ApiKey
from tests.api.api_support import Party, World, assert_problem, public_pem, signed


def _revoke(world: World, party: Party) -> None:
    with world.client(world.operator) as op:
        op.request("DELETE", f"/v1/organizations/{party.org_id}/keys/{party.keyid}")


def test_a_cached_key_is_refused_once_revoked(world: World, http: TestClient) -> None:
    assert signed(http, world.bank, "GET", "/v1/programs").status_code == 200
    assert auth._key_cache.get(world.bank.keyid) is not None
    _revoke(world, world.bank)
    assert auth._key_cache.get(world.bank.keyid) is not None  # still parsed, no longer trusted
    assert_problem(signed(http, world.bank, "GET", "/v1/programs"), 401, "unknown_key")
    # Whatever else is wrong with the request, a revoked key is reported first, as before.
    impostor = Party(world.bank.org_id, world.bank.keyid, Ed25519PrivateKey.generate())
    assert_problem(signed(http, impostor, "GET", "/v1/programs"), 401, "unknown_key")
    stale = signed(http, world.bank, "GET", "/v1/programs", created=int(time.time()) - 1000)
    assert_problem(stale, 401, "unknown_key")
    long_nonce = signed(http, world.bank, "GET", "/v1/programs", nonce="n" * 129)
    assert_problem(long_nonce, 401, "unknown_key")


def test_a_cached_key_revoked_by_another_instance_is_refused(
    world: World, http: TestClient
) -> None:
    # Another API process revokes it: this one learns it from the database, not from its cache.
    assert signed(http, world.shop, "GET", "/v1/programs").status_code == 200
    with transaction(world.app.state.engine) as session:
        session.execute(
            update(ApiKey).where(ApiKey.keyid == world.shop.keyid).values(status="revoked")
        )
    assert_problem(signed(http, world.shop, "GET", "/v1/programs"), 401, "unknown_key")


def test_a_cache_entry_that_disagrees_with_the_database_is_not_trusted(
    world: World, http: TestClient
) -> None:
    # Never happens (a key id is its key's thumbprint), but the database's key wins if it does.
    assert signed(http, world.bank, "GET", "/v1/programs").status_code == 200
    other = Ed25519PrivateKey.generate()
    with transaction(world.app.state.engine) as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.keyid == world.bank.keyid)
            .values(public_key_pem=public_pem(other))
        )
    assert_problem(signed(http, world.bank, "GET", "/v1/programs"), 401, "signature_invalid")
    swapped = Party(world.bank.org_id, world.bank.keyid, other)
    assert signed(http, swapped, "GET", "/v1/programs").status_code == 200
    assert signed(http, world.bank, "GET", "/v1/programs").status_code == 401


def test_only_a_verified_request_burns_its_nonce(world: World, http: TestClient) -> None:
    assert signed(http, world.bank, "GET", "/v1/programs").status_code == 200  # key cached
    impostor = Party(world.bank.org_id, world.bank.keyid, Ed25519PrivateKey.generate())
    forged = signed(http, impostor, "GET", "/v1/programs", nonce="first-come")
    assert_problem(forged, 401, "signature_invalid")
    skewed = signed(
        http, world.bank, "GET", "/v1/programs", nonce="first-come", created=int(time.time()) - 999
    )
    assert_problem(skewed, 401, "clock_skew")
    assert signed(http, world.bank, "GET", "/v1/programs", nonce="first-come").status_code == 200
    again = signed(http, world.bank, "GET", "/v1/programs", nonce="first-come")
    assert_problem(again, 401, "nonce_replayed")


def test_nonce_length_is_checked_before_it_is_stored(world: World, http: TestClient) -> None:
    too_long = signed(http, world.bank, "GET", "/v1/programs", nonce="n" * 129)
    assert_problem(too_long, 401, "signature_malformed")
    assert signed(http, world.bank, "GET", "/v1/programs", nonce="n" * 128).status_code == 200


def test_a_refused_request_of_a_suspended_organisation_cannot_be_replayed(
    world: World, http: TestClient
) -> None:
    with world.client(world.operator) as op:
        op.request("PATCH", f"/v1/organizations/{world.shop.org_id}", {"status": "suspended"})
    refused = signed(http, world.shop, "GET", "/v1/programs", nonce="while-suspended")
    assert_problem(refused, 403, "organisation_suspended")
    with world.client(world.operator) as op:
        op.request("PATCH", f"/v1/organizations/{world.shop.org_id}", {"status": "active"})
    replay = http.get("/v1/programs", headers=dict(refused.request.headers))
    assert_problem(replay, 401, "nonce_replayed")


def test_old_nonces_are_pruned(
    world: World, http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = world.app.state.engine
    old = utcnow() - auth.NONCE_RETENTION - timedelta(seconds=1)
    with transaction(engine) as session:
        session.add_all(
            [SeenNonce(keyid=world.bank.keyid, nonce=f"old-{n}", seen_at=old) for n in range(3)]
        )
    monkeypatch.setattr(auth, "PRUNE_ONE_IN", 1)
    assert signed(http, world.bank, "GET", "/v1/programs", nonce="recent").status_code == 200
    with transaction(engine) as session:
        nonces = set(session.scalars(select(SeenNonce.nonce)))
        assert "recent" in nonces
        assert not {n for n in nonces if n.startswith("old-")}
        assert session.scalar(select(func.count()).select_from(SeenNonce)) == len(nonces)
