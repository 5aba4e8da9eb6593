"""`clearing risk` freeze, blocklist and review commands: each does what its route does, and
every refusal is one line."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from clearing.app.cli import app
from clearing.core.db import transaction
from clearing.core.policy import Action, PendingReview, bind_policy
from clearing.core.timeutil import utcnow
from clearing.web.context import Caller
from issuers import accruals
from issuers.schemas import AccrualCreate
from tests.factories import accrue, balance, build_world, key, member
from tests.risk.test_reviews import policy


@pytest.fixture(autouse=True)
def _own_var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARING_VAR_DIR", str(tmp_path / "var"))
    for name in ("CLEARING_SETTLEMENT_DIR", "CLEARING_PLATFORM_KEY", "CLEARING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["risk", *args], env={"CLEARING_DATABASE_URL": url})


def ok(url: str, *args: str) -> str:
    result = run(url, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def refused(url: str, *args: str) -> str:
    result = run(url, *args)
    assert result.exit_code == 1, (result.output, result.exception)
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert "Traceback" not in result.stderr
    return line


def ids(text: str) -> list[str]:
    return re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text)


def test_freeze_and_blocklist_commands(engine: Engine, db_url: str) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 1_000)

    frozen = ok(db_url, "freeze", "member", "--program", "BANKA", "--member", "alice",
                "--points", "400", "--reason", "disputed")  # fmt: skip
    assert "member BANKA/alice (400 points): disputed" in frozen
    assert balance(engine, w.bank_a, "BANKA", "alice") == (1_000, 600)
    whole = ok(db_url, "freeze", "program", "--program", "BANKA", "--reason", "audit")
    assert refused(db_url, "freeze", "program", "--program", "BANKA", "--reason", "again") == (
        "error: already_frozen: this program is already frozen"
    )
    assert "organisation freeze names its org_id" in refused(
        db_url, "freeze", "organisation", "--reason", "x"
    )
    assert len(ok(db_url, "freezes").splitlines()) == 2
    ok(db_url, "unfreeze", ids(frozen)[0], "--reason", "settled")
    ok(db_url, "unfreeze", ids(whole)[0], "--reason", "done")
    assert balance(engine, w.bank_a, "BANKA", "alice") == (1_000, 1_000)
    assert ok(db_url, "freezes") == "no freezes\n"
    assert "lifted" in ok(db_url, "freezes", "--all")
    assert refused(db_url, "unfreeze", ids(frozen)[0], "--reason", "x").startswith(
        "error: freeze_lifted:"
    )

    listed = ok(db_url, "block", "BANKA", "eve", "--reason", "known fraudster")
    assert "BANKA/eve" in ok(db_url, "blocklist", "--program", "BANKA")
    ok(db_url, "unblock", ids(listed)[0], "--reason", "cleared")
    assert ok(db_url, "blocklist") == "no blocklist entries\n"
    assert refused(db_url, "block", "NOPE", "eve", "--reason", "x") == (
        "error: not_found: unknown program NOPE"
    )


def test_review_commands(engine: Engine, db_url: str) -> None:
    bind_policy(engine, policy(Action.ACCRUAL))
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    asked = Caller(w.bank_a.org_id, "issuer", "bank-a-key")
    for points in (2_000, 3_000):
        with pytest.raises(PendingReview), transaction(engine) as session:
            accruals.accrue(
                session,
                asked,
                AccrualCreate(program="BANKA", external_id="alice", points=points),
                utcnow(),  # the console approves now: a review from T0 would have lapsed
                key(),
            )
    queue = ok(db_url, "reviews")
    first, second = (ids(line)[0] for line in queue.splitlines())
    assert "accrual pending large_operation" in queue
    approved = ok(db_url, "approve", first)
    assert approved.startswith(f"approved {first} accrual: ")
    assert '"points":2000' in approved
    ok(db_url, "reject", second, "--reason", "not ordered")
    assert balance(engine, w.bank_a, "BANKA", "alice")[0] == 2_000
    assert ok(db_url, "reviews") == "no reviews\n"
    assert refused(db_url, "approve", first) == (
        "error: review_decided: this review was already approved"
    )
    assert refused(db_url, "approve", str(uuid.uuid4())) == "error: not_found: unknown review"
