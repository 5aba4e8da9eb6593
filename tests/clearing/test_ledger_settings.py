"""CLEARING_BALANCE_SLOTS and CLEARING_LEDGER_ENGINE reach every ledger the platform makes:
through Settings, the engine it opens, and the services and app that post on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from clearing.app.factory import create_app
from clearing.core.config import Settings
from clearing.core.db import make_engine, transaction
from clearing.core.ledger import MEMBER, Ledger, LedgerOptions, ledger_options
from clearing.core.models import Account, Balance
from tests.factories import accrue, build_world, member


def _settings(monkeypatch: pytest.MonkeyPatch, url: str, tmp_path: Path, **env: str) -> Settings:
    monkeypatch.setenv("CLEARING_DATABASE_URL", url)
    monkeypatch.setenv("CLEARING_VAR_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def _slots(engine: Engine) -> set[tuple[str, int, int]]:
    """(kind, slots declared, balance rows) of every account."""
    with transaction(engine) as session:
        rows = session.execute(
            select(Account.kind, Account.slots, func.count(Balance.slot))
            .join(Balance, Balance.account_id == Account.id)
            .group_by(Account.id, Account.kind, Account.slots)
        ).all()
    return {(kind, slots, count) for kind, slots, count in rows}


def test_balance_slots_setting_shapes_every_new_system_account(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    settings = _settings(monkeypatch, db_url, tmp_path, CLEARING_BALANCE_SLOTS="3")
    assert settings.balance_slots == 3
    engine = settings.open_engine()
    try:
        w = build_world(engine)  # organisations and programs open their accounts in services
        member(engine, w.bank_a, "BANKA", "alice")
        accrue(engine, w.shop, "BANKA", "alice", 500)
        shapes = _slots(engine)
        assert {(kind, slots, rows) for kind, slots, rows in shapes if kind != MEMBER} == {
            (kind, 3, 3) for kind, _, _ in shapes if kind != MEMBER
        }
        assert {shape for shape in shapes if shape[0] == MEMBER} == {(MEMBER, 1, 1)}
        assert len(shapes) > 3
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", ["server", "python"])
def test_ledger_engine_setting_reaches_the_ledger_and_the_app(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, name: str
) -> None:
    settings = _settings(monkeypatch, pg_url, tmp_path, CLEARING_LEDGER_ENGINE=name)
    assert settings.ledger_engine == name
    app = create_app(settings)
    engine: Engine = app.state.engine
    try:
        with transaction(engine) as session:
            assert ledger_options(session) == LedgerOptions(engine=name, balance_slots=8)
            assert Ledger(session).on_server is (name == "server")
            assert Ledger(session).balance_slots == 8
    finally:
        engine.dispose()


def test_the_server_engine_is_the_default_and_a_wrong_name_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CLEARING_LEDGER_ENGINE", raising=False)
    monkeypatch.delenv("CLEARING_BALANCE_SLOTS", raising=False)
    monkeypatch.setenv("CLEARING_DATABASE_URL", f"sqlite:///{tmp_path / 'clearing.core.db'}")
    assert Settings.from_env().ledger_engine == "server"
    assert LedgerOptions.from_settings(Settings.from_env()) == LedgerOptions()
    monkeypatch.setenv("CLEARING_LEDGER_ENGINE", "sql")
    with pytest.raises(ValueError, match="CLEARING_LEDGER_ENGINE must be one of server, python"):
        Settings.from_env()
    monkeypatch.setenv("CLEARING_LEDGER_ENGINE", "python")
    for slots in ("0", "10"):
        monkeypatch.setenv("CLEARING_BALANCE_SLOTS", slots)
        with pytest.raises(ValueError, match="balance slots must be between 1 and 9"):
            Settings.from_env().open_engine()


def test_a_ledger_on_an_engine_without_options_posts_as_the_defaults(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with transaction(engine) as session:
            ledger = Ledger(session)
            assert (ledger.on_server, ledger.balance_slots) == (True, 8)
    finally:
        engine.dispose()
