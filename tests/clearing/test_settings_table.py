"""Settings do what the README says: its table lists exactly the variables the code reads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearing.core.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


class _Recording(dict[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        super().__init__(values or {})
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings read named variables, never the whole environment")


def _documented() -> set[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Settings", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `(CLEARING_[A-Z_]+)` \|", section, flags=re.M))


def test_the_readme_table_lists_exactly_what_settings_read() -> None:
    env = _Recording({"CLEARING_SETTLEMENT_WORKERS": "2"})
    Settings.from_env(env)
    assert env.asked == _documented()


def test_the_documented_defaults_are_the_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///var/clearing.db"
    assert (settings.zone, settings.cutoff) == ("Asia/Shanghai", "00:00")
    assert settings.settlement_dir == Path("var/settlement")
    assert (settings.settlement_reader, settings.settlement_workers) == ("select", None)
    assert (settings.settlement_engine, settings.spark_master) == ("pandas", "local[2]")
    assert (settings.settlement_grace_minutes, settings.hold_ttl_seconds) == (10, 900)
    assert (settings.balance_slots, settings.ledger_engine) == (8, "server")
    assert settings.platform_key_path == Path("var/keys/platform.pem")
    assert (settings.max_body_bytes, settings.max_bulk_body_bytes) == (1048576, 67108864)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLEARING_HOLD_TTL_SECONDS", "15m"),
        ("CLEARING_BALANCE_SLOTS", "eight"),
        ("CLEARING_SETTLEMENT_WORKERS", "two"),
        ("CLEARING_SETTLEMENT_GRACE_MINUTES", "1.5"),
        ("CLEARING_MAX_BODY_BYTES", "1MiB"),
        ("CLEARING_SETTLEMENT_READER", "copy"),
        ("CLEARING_LEDGER_ENGINE", "fast"),
        ("CLEARING_SETTLEMENT_ENGINE", "flink"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})
