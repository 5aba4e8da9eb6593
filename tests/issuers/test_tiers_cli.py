"""`clearing tiers list` and `clearing tiers review --date D` on a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

import clearing.app.tables  # noqa: F401
from clearing.app.cli import app
from clearing.core.db import make_engine, transaction
from issuers import tiering
from issuers.schemas import MemberTierSet
from tests.factories import build_world, member
from tests.issuers.test_tiers import _tiers

ENROLLED = datetime(2025, 1, 1, tzinfo=UTC)
"""08:00 on 1 January in Shanghai (the issuers' zone)."""


def test_list_and_review_a_past_anniversary_then_refuse_a_future_one(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        world = build_world(engine, now=ENROLLED)
        _tiers(engine, world)
        member(engine, world.bank_b, "BANKB", "m1", now=ENROLLED)
        with transaction(engine) as session:
            tiering.place_member(
                session,
                world.bank_b,
                "BANKB",
                "m1",
                MemberTierSet(tier="silver"),
                ENROLLED + timedelta(days=1),
            )
    finally:
        engine.dispose()
    env = {"CLEARING_DATABASE_URL": db_url}
    listed = CliRunner().invoke(app, ["tiers", "list", "BANKB"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[1].startswith("1 silver x1.5")
    # No qualifying points or spend: on its 2026 anniversary m1 goes back to standard.
    done = CliRunner().invoke(
        app, ["tiers", "review", "--date", "2026-01-01", "--program", "BANKB"], env=env
    )
    assert done.exit_code == 0, done.output
    assert done.stdout == "BANKB 2026-01-01: 1 reviewed, 0 upgraded, 1 downgraded\n"
    again = CliRunner().invoke(app, ["tiers", "review", "--date", "2026-01-01"], env=env)
    assert again.stdout == "BANKB 2026-01-01: 1 reviewed, 0 upgraded, 0 downgraded\n"
    future = CliRunner().invoke(app, ["tiers", "review", "--date", "2999-01-01"], env=env)
    assert future.exit_code == 1
    assert future.stderr.startswith("error: anniversary_not_begun: 2999-01-01 has not begun")
