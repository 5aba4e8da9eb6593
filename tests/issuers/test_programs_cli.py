"""`clearing members enrol`, `clearing programs expiring|notices` and `clearing expire`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from clearing.app.cli import app
from clearing.core.db import transaction
from clearing.core.timeutil import add_months, utcnow
from issuers import expiring
from issuers.schemas import ProgramExpirySet
from tests.factories import accrue, build_world


def invoke(url: str, *args: str) -> Result:
    """Run `clearing ARGS` on the database at `url`."""
    return CliRunner().invoke(app, list(args), env={"CLEARING_DATABASE_URL": url})


def test_enrol_a_file_once_then_expire_with_a_progress_bar(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    now = utcnow()
    w = build_world(engine, now=add_months(now, -14))  # point values in force 14 months back
    members = tmp_path / "members.csv"
    members.write_text("external_id\ncard-1\ncard-2\ncard-3\n")
    done = invoke(db_url, "members", "enrol", "--program", "BANKA", str(members))
    assert done.exit_code == 0, done.output
    assert done.stdout == "BANKA: enrolled 3 members\n"
    again = invoke(db_url, "members", "enrol", "--program", "BANKA", str(members))
    assert again.stdout == "BANKA: this file was enrolled before (3 members); nothing new\n"
    clash = tmp_path / "clash.csv"
    clash.write_text("card-9\ncard-2\n")
    refused = invoke(db_url, "members", "enrol", "--program", "BANKA", str(clash))
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: members_exist: ")
    assert len(refused.stderr.splitlines()) == 1

    # Points earned 13 months ago (BANKA: 12 months) are due now; 30 days' notice.
    with transaction(engine) as session:
        expiring.set_expiry_policy(
            session,
            w.bank_a,
            "BANKA",
            ProgramExpirySet(expiry_policy="rolling", expiry_months=12, expiry_notice_days=30),
        )
    accrue(engine, w.bank_a, "BANKA", "card-1", 70, now=add_months(now, -13))
    accrue(engine, w.bank_a, "BANKA", "card-2", 30, now=add_months(now, -13))
    accrue(engine, w.bank_a, "BANKA", "card-3", 5, now=add_months(now, -12) + timedelta(days=10))
    listed = invoke(db_url, "programs", "expiring", "BANKA", "--days", "30")
    assert listed.stdout.splitlines()[0] == "BANKA: 105 points of 3 members expire within 30 days"
    noticed = invoke(db_url, "programs", "record-notices")
    assert noticed.stdout == "recorded 1 expiry notices\n"  # card-3's; the others are due
    assert "card-3 5 points expire on" in invoke(db_url, "programs", "notices", "BANKA").stdout
    expired = invoke(db_url, "expire", "--chunk", "1")
    assert expired.exit_code == 0, expired.output
    assert expired.stdout == "released 0 expired holds, expired 100 points\n"
    assert "expiring" in expired.stderr  # the progress bar
    assert invoke(db_url, "expire").stdout == "released 0 expired holds, expired 0 points\n"
