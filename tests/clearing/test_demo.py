"""The README's main job: `clearing demo` runs a day end to end and settles it."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from rich.console import Console

from clearing.app.demo import run_demo
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
    folders = [p for p in (tmp_path / "settlement").rglob("manifest.json")]
    assert len(folders) >= 6
    public = load_or_create(settings.platform_key_path).public_key
    for manifest in folders:
        assert verify_directory(manifest.parent, public) == []
