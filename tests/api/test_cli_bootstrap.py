"""Bootstrapping from the command line: the platform, its operator key, then the signed API."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from clearing.app.cli import app as cli
from clearing.app.factory import create_app
from clearing.sdk.client import ApiError, PartnerClient
from clearing.web.platform_key import jwk_thumbprint
from clearing.web.signatures import public_jwk
from tests.api.api_support import BASE, make_settings, public_pem


def test_org_create_and_key_add_print_ids_alone(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARING_DATABASE_URL", db_url)
    runner = CliRunner()
    created = runner.invoke(
        cli, ["org", "create", "--kind", "platform", "--name", "Platform", "--currency", "CNY"]
    )
    assert created.exit_code == 0, created.output
    org_id = created.stdout.strip()
    assert len(org_id) == 36
    assert created.stdout == org_id + "\n"

    operator_key = Ed25519PrivateKey.generate()
    pem = tmp_path / "operator.pem"
    pem.write_text(public_pem(operator_key))
    added = runner.invoke(cli, ["key", "add", org_id, "--public-key", str(pem)])
    assert added.exit_code == 0, added.output
    keyid = added.stdout.strip()
    assert added.stdout == keyid + "\n"

    jwk_key = Ed25519PrivateKey.generate()
    jwk_file = tmp_path / "second.jwk"
    jwk_file.write_text(str(public_jwk(jwk_key.public_key(), "x")).replace("'", '"'))
    second = runner.invoke(cli, ["key", "add", org_id, "--public-key", str(jwk_file)])
    assert second.exit_code == 0, second.output

    bad = runner.invoke(cli, ["key", "add", org_id, "--public-key", str(tmp_path / "operator.pem")])
    assert bad.exit_code == 1
    assert bad.stdout == ""

    app = create_app(make_settings(db_url, tmp_path))
    try:
        client = PartnerClient(BASE, keyid, operator_key, transport=httpx.ASGITransport(app=app))
        issuer = client.request(
            "POST", "/v1/organizations", {"kind": "issuer", "name": "Bank", "currency": "CNY"}
        )
        assert issuer["kind"] == "issuer"
        revoked = runner.invoke(cli, ["key", "revoke", keyid])
        assert revoked.exit_code == 0, revoked.output
        with pytest.raises(ApiError) as error:
            client.request("GET", "/v1/programs")
        assert error.value.code == "unknown_key"
    finally:
        app.state.engine.dispose()


def test_key_revoke_takes_a_key_id_that_starts_with_a_dash(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARING_DATABASE_URL", db_url)
    runner = CliRunner()
    created = runner.invoke(
        cli, ["org", "create", "--kind", "platform", "--name", "Platform", "--currency", "CNY"]
    )
    assert created.exit_code == 0, created.output
    key = Ed25519PrivateKey.generate()
    while not jwk_thumbprint(key.public_key()).startswith("-"):  # one key in 64
        key = Ed25519PrivateKey.generate()
    pem = tmp_path / "dash.pem"
    pem.write_text(public_pem(key))
    added = runner.invoke(cli, ["key", "add", created.stdout.strip(), "--public-key", str(pem)])
    assert added.exit_code == 0, added.output
    keyid = added.stdout.strip()
    assert keyid.startswith("-")

    revoked = runner.invoke(cli, ["key", "revoke", keyid])
    assert revoked.exit_code == 0, revoked.output
    assert revoked.stdout == f"revoked {keyid}\n"
    for unknown in ("--gNU70qOeiHB-8SsN7WThj1aKl3h5zSplSKnT3pOr4", "-h"):
        refused = runner.invoke(cli, ["key", "revoke", unknown])
        assert refused.exit_code == 1
        assert "unknown key" in refused.output
