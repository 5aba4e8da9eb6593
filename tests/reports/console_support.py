"""Console test helpers: users made through the real service, signing in through the real form."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass

import pyotp
from fastapi import FastAPI
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.timeutil import utcnow
from issuers.organisations import create_organisation
from issuers.schemas import OrganisationCreate
from reports.console.accounts import add_user
from reports.console.roles import Role

CONSOLE_BASE = "https://testserver"
"""The session cookie is Secure: the test client must speak https to send it back."""
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True, slots=True)
class ConsoleLogin:
    """A console user's credentials as the person holds them."""

    user_id: uuid.UUID
    org_id: uuid.UUID
    username: str
    password: str
    totp_secret: str

    def code(self, step_offset: int = 0) -> str:
        """The authenticator's code now (or a step later: a code is accepted once)."""
        totp = pyotp.TOTP(self.totp_secret)
        return totp.at(int(utcnow().timestamp()) + step_offset * totp.interval)


def organisation(app: FastAPI, kind: str, name: str, zone: str = "Asia/Shanghai") -> uuid.UUID:
    """An organisation made through the real service (what `clearing org create` does)."""
    with transaction(app.state.engine) as session:
        org = create_organisation(
            session, OrganisationCreate(kind=kind, name=name, currency="CNY"), utcnow()
        )
        org.zone = zone
        return org.id


def console_user(
    app: FastAPI, org_id: uuid.UUID, role: Role, *, username: str | None = None, locale: str = "en"
) -> ConsoleLogin:
    """A console user made through the real service (what `clearing user add` does)."""
    name = username or f"{role.value.replace('_', '-')}-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    with transaction(app.state.engine) as session:
        created = add_user(
            session,
            org_id=org_id,
            username=name,
            display_name=name.title(),
            role=role,
            password=password,
            locale=locale,
            now=utcnow(),
        )
    return ConsoleLogin(created.user.id, org_id, name, password, created.totp_secret)


def csrf_of(html: str) -> str:
    """The CSRF token a console page put in its forms."""
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: TestClient, login: ConsoleLogin, *, step_offset: int = 0) -> str:
    """Sign in through the login form; returns the dashboard's CSRF token."""
    form = client.get("/console/login")
    assert form.status_code == 200
    answer = client.post(
        "/console/login",
        data={
            "csrf_token": csrf_of(form.text),
            "username": login.username,
            "password": login.password,
            "code": login.code(step_offset),
            "next": "/console/",
        },
        follow_redirects=True,
    )
    assert answer.status_code == 200, answer.text
    return csrf_of(answer.text)
