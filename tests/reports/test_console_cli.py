"""`clearing user add`: the first console user, from the command line; refusals in one line."""

from __future__ import annotations

import pyotp
from sqlalchemy import select
from typer.testing import CliRunner, Result

from clearing.app.cli import app
from clearing.core.db import make_engine, transaction
from reports.console.accounts import sign_in
from reports.console.models import ConsoleUser
from tests.clearing.test_cli import count, invoke, one_line_error


def _add(url: str, org_id: str, *args: str, password: str = "correct horse battery") -> Result:
    return CliRunner().invoke(
        app,
        ["user", "add", org_id, *args, "--password-stdin"],
        input=password + "\n",
        env={"CLEARING_DATABASE_URL": url},
    )


def test_the_first_user_is_added_and_can_sign_in_with_the_printed_secret(db_url: str) -> None:
    platform = invoke(db_url, "org", "create", "--kind", "platform", "--name", "Platform")
    org_id = platform.stdout.strip()
    added = _add(db_url, org_id, "--username", "ops.lead", "--role", "operator", "--name", "Li Na")
    assert added.exit_code == 0, added.output
    out: str = added.stdout
    secret = next(line.split()[-1] for line in out.splitlines() if "secret:" in line)
    assert "otpauth://totp/" in out
    assert "correct horse" not in out
    engine = make_engine(db_url)
    try:
        from clearing.core.timeutil import utcnow

        now = utcnow()
        with transaction(engine) as session:
            user = sign_in(
                session,
                username="ops.lead",
                password="correct horse battery",
                code=pyotp.TOTP(secret).at(now),
                now=now,
            )
            assert user.display_name == "Li Na"
            stored = session.scalar(select(ConsoleUser.password_hash))
        assert stored is not None
        assert stored.startswith("$argon2id$")
    finally:
        engine.dispose()


def test_refusals_are_one_line_and_add_nobody(db_url: str) -> None:
    bank = invoke(db_url, "org", "create", "--kind", "issuer", "--name", "Bank").stdout.strip()
    line = one_line_error(_add(db_url, bank, "--username", "x.ops", "--role", "operator"))
    assert "role_not_allowed" in line
    line = one_line_error(_add(db_url, bank, "--username", "x.fin", "--role", "cashier"), 2)
    assert "not a role" in line
    line = one_line_error(
        _add(db_url, bank, "--username", "x.fin", "--role", "finance", password="short")
    )
    assert "at least 12 characters" in line
    assert count(db_url, ConsoleUser) == 0
