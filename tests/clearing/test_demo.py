"""The README's main job: `clearing demo` runs a day end to end and settles it."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from clearing.app.cli import app as cli
from clearing.app.demo import prepare_demo, run_demo
from clearing.core.config import Settings
from clearing.web.platform_key import load_or_create
from settlement.verify import verify_directory


def test_demo_runs_a_day_through_the_api_and_settles_it(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings.from_env(),
        database_url=f"sqlite:///{tmp_path}/clearing.db",
        settlement_dir=tmp_path / "settlement",
        platform_key_path=tmp_path / "keys" / "platform.pem",
    )
    out = io.StringIO()
    assert run_demo(settings, Console(file=out, width=200)) == 0
    text = out.getvalue()
    assert "ledger check: clean" in text
    assert "positions sum to 0" in text
    # Points earned by rules: 588 yuan at the travel rule's 2 points a yuan, doubled by the
    # gold tier the member reached at once (120,000 qualifying points) and by member day.
    assert (
        "earning: HX-0001 (gold) spent 588.00 CNY on travel on member day: 3,528 points"
        " (rule travel +1,176; tier gold +1,176; campaign member-day +1,176)"
    ) in text
    # A coffee voucher from the coffee shop's catalogue, paid with the carrier's points: the
    # carrier owes the shop 80% of its 32.00 CNY value, a line of the shop's settlement file.
    assert (
        "mall: 13800138000 redeemed a Harbour Coffee grande latte for 12,000 PRMPTS points;"
    ) in text
    assert "Pearl River Mobile owes Harbour Coffee 25.60 CNY (mall_redemption)" in text
    assert (
        "Harbour Coffee's statement.csv has a mall_redemption line: 12,000 PRMPTS points,"
        " gross 25.60 CNY"
    ) in text
    # The risk controls at work: one decline, one review approved, one rate refused.
    assert "risk: declined no_agreement" in text
    assert "risk: accrual of 1,500,000 points pending_review" in text
    assert "risk: review approved by the operator" in text
    assert "risk: rate refused arbitrage_cycle" in text
    folders = [p for p in (tmp_path / "settlement").rglob("manifest.json")]
    assert len(folders) >= 6
    public = load_or_create(settings.platform_key_path).public_key
    for manifest in folders:
        assert verify_directory(manifest.parent, public) == []


def test_demo_runs_in_a_folder_of_its_own_emptied_at_every_run(tmp_path: Path) -> None:
    var = tmp_path / "var"
    stale = var / "demo" / "settlement" / "CNY" / "2020-01-01"
    stale.mkdir(parents=True)
    (var / "demo" / "clearing.db").write_bytes(b"an earlier demo")
    (var / "clearing.db").write_bytes(b"the operator's own")
    settings, command = prepare_demo({"CLEARING_VAR_DIR": str(var)}, ".venv/bin/clearing")
    assert settings.database_url == f"sqlite:///{var}/demo/clearing.db"
    assert settings.settlement_dir == var / "demo" / "settlement"
    assert settings.platform_key_path == var / "demo" / "keys" / "platform.pem"
    assert command == f"CLEARING_VAR_DIR={var}/demo .venv/bin/clearing"
    assert not (var / "demo" / "clearing.db").exists()
    assert not stale.exists()
    assert (var / "clearing.db").read_bytes() == b"the operator's own"


def test_demo_on_a_configured_database_leaves_the_other_settings_alone(tmp_path: Path) -> None:
    environ = {
        "CLEARING_DATABASE_URL": f"sqlite:///{tmp_path}/mine.db",
        "CLEARING_VAR_DIR": str(tmp_path / "var"),
    }
    settings, command = prepare_demo(environ, "clearing")
    assert settings == Settings.from_env(environ)
    assert command == "clearing"


def test_demo_prints_the_commands_that_explore_it(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings.from_env({"CLEARING_VAR_DIR": str(tmp_path / "var")}),
        database_url=f"sqlite:///{tmp_path}/demo.db",
    )
    out = io.StringIO()
    command = f"CLEARING_VAR_DIR={tmp_path}/var .venv/bin/clearing"
    assert run_demo(settings, Console(file=out, width=60, soft_wrap=True), command) == 0
    lines = out.getvalue().splitlines()
    for args in ("ledger check", "settlement status", "serve"):
        assert f"  {command} {args}" in lines
    assert f"  {command} settlement verify {settings.settlement_dir}" in lines
    # What it printed works: the other commands find the demo's database.
    result = CliRunner().invoke(
        cli, ["ledger", "check"], env={"CLEARING_DATABASE_URL": settings.database_url}
    )
    assert result.stdout == "ledger check: clean\n"


def test_demo_settles_its_day_on_spark(tmp_path: Path) -> None:
    """`clearing demo --engine spark`: the same day, netted and written by local Spark."""
    result = CliRunner().invoke(
        cli, ["demo", "--engine", "spark"], env={"CLEARING_VAR_DIR": str(tmp_path / "var")}
    )
    assert result.exit_code == 0, result.output
    assert "on the spark engine (end of day simulated)" in result.stdout
    assert "positions sum to 0" in result.stdout
    settlement = tmp_path / "var" / "demo" / "settlement"
    # The window left the ledger as Parquet, by currency and business date.
    assert list(settlement.glob(".window/currency=CNY/business_date=*/part-00000.parquet"))
    public = load_or_create(tmp_path / "var" / "demo" / "keys" / "platform.pem").public_key
    folders = [m.parent for m in settlement.rglob("manifest.json")]
    assert len(folders) >= 6
    for folder in folders:
        assert verify_directory(folder, public) == []


def test_demo_refuses_an_unknown_engine_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["demo", "--engine", "flink"], env={"CLEARING_VAR_DIR": str(tmp_path / "var")}
    )
    assert result.exit_code == 2
    assert "one of pandas, spark, not 'flink'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "var" / "demo").exists()
