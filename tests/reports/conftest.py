"""Fixtures of the reports and console tests: the real app (API and console) on a real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from clearing.app.factory import create_app
from tests.api.api_support import make_settings
from tests.reports.console_support import CONSOLE_BASE


@pytest.fixture
def console_app(db_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    application = create_app(make_settings(db_url, tmp_path))
    yield application
    application.state.engine.dispose()


@pytest.fixture
def browser(console_app: FastAPI) -> Iterator[TestClient]:
    """A client that keeps cookies like a browser, over https (the cookies are Secure)."""
    with TestClient(console_app, base_url=CONSOLE_BASE) as client:
        yield client
