"""Console users and their sessions: passwords (argon2id), TOTP, sign-in, sessions, the audit trail.

A failed sign-in is counted in the user's row even though the sign-in raises: the count is written
as the error's `kept` write, after the rollback (`clearing.core.db.transaction`). Five failures in
a row lock the user for a quarter of an hour. A TOTP code is good once (its 30-second step is kept).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clearing.core.errors import ClearingError, Conflict, InvalidInput, Kind, NotFound
from clearing.core.ids import new_id
from clearing.core.timeutil import aware
from issuers.models import Organisation
from reports.console.models import ConsoleAction, ConsoleSession, ConsoleUser
from reports.console.roles import Role, may_hold

ISSUER_NAME = "Points clearing"
"""What an authenticator app shows above the user's codes."""
MIN_PASSWORD = 12
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
IDLE_TIMEOUT = timedelta(minutes=30)
ABSOLUTE_TIMEOUT = timedelta(hours=12)
TOUCH_EVERY = timedelta(minutes=1)
"""A session's last-seen time is written at most this often (not on every page)."""
LOCALES = ("en", "zh_CN")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
_HASHER = PasswordHasher()  # argon2id with the library's current parameters (RFC 9106)


class SignInRefused(ClearingError):
    kind = Kind.UNAUTHENTICATED
    code = "sign_in_refused"
    title = "Sign-in refused"


class UsernameTaken(Conflict):
    code = "username_taken"
    title = "Username taken"


class RoleNotAllowed(Conflict):
    code = "role_not_allowed"
    title = "Role not allowed for this organisation"


@dataclass(frozen=True, slots=True)
class NewUser:
    """A user just created, with the second factor's secret to show them once."""

    user: ConsoleUser
    totp_secret: str
    provisioning_uri: str


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A live session, read once per request: who, of which organisation, the CSRF token.

    Plain values, not rows: an error page still shows them after the request rolled back.
    """

    id: uuid.UUID
    org_id: uuid.UUID
    username: str
    display_name: str
    role: str
    locale: str
    org_name: str
    org_kind: str
    zone: str
    csrf_token: str


class Actor(Protocol):
    """Whoever an audit line names: a user row or a signed-in session."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def org_id(self) -> uuid.UUID: ...


def token_hash(token: str) -> str:
    """What the sessions table keeps of a cookie's token."""
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(
    session: Session,
    *,
    org_id: uuid.UUID,
    username: str,
    display_name: str,
    role: Role,
    password: str,
    locale: str,
    now: datetime,
) -> NewUser:
    """Create a console user of an organisation, with a fresh TOTP secret."""
    if not _USERNAME.match(username):
        raise InvalidInput(
            "a username is 3 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
            field="username",
        )
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password has at least {MIN_PASSWORD} characters", field="password")
    if locale not in LOCALES:
        raise InvalidInput(f"locale is one of {', '.join(LOCALES)}", field="locale")
    organisation = session.get(Organisation, org_id)
    if organisation is None:
        raise NotFound("no such organisation", field="org_id")
    if not may_hold(role, organisation.kind):
        raise RoleNotAllowed(f"a {role} acts on every party: only platform users hold it")
    if session.scalar(select(ConsoleUser.id).where(ConsoleUser.username == username)):
        raise UsernameTaken(f"the username {username!r} is taken")
    secret = pyotp.random_base32()
    user = ConsoleUser(
        id=new_id(),
        org_id=org_id,
        username=username,
        display_name=display_name.strip() or username,
        role=role.value,
        password_hash=_HASHER.hash(password),
        totp_secret=secret,
        locale=locale,
        status="active",
        failed_logins=0,
        created_at=now,
    )
    session.add(user)
    session.flush()
    record(session, user, "user_added", username, {"role": role.value}, now)
    uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER_NAME)
    return NewUser(user, secret, uri)


def _refuse(user_id: uuid.UUID | None, username: str, now: datetime, why: str) -> SignInRefused:
    """One message for every cause (no hint whether the name exists); the cause is audited."""
    error = SignInRefused("the username, password or code is not right, or the user is locked")

    def kept(fresh: Session) -> None:
        if user_id is not None:
            user = fresh.get(ConsoleUser, user_id)
            if user is not None and why != "locked":
                user.failed_logins += 1
                if user.failed_logins >= MAX_FAILURES:
                    user.locked_until = now + LOCKOUT
                    user.failed_logins = 0
        fresh.add(_action(user_id, None, "sign_in_refused", username[:200], {"why": why}, now))

    error.kept = kept
    return error


def sign_in(
    session: Session, *, username: str, password: str, code: str, now: datetime
) -> ConsoleUser:
    """The user whose password and current TOTP code these are, or SignInRefused."""
    user = session.scalar(
        select(ConsoleUser)
        .where(ConsoleUser.username == username.strip().lower())
        .with_for_update()
    )
    if user is None:
        _HASHER.hash(password)  # about as long as a real check: timing tells no names apart
        raise _refuse(None, username, now, "unknown_user")
    if user.status != "active":
        raise _refuse(user.id, username, now, "disabled")
    if user.locked_until is not None and aware(user.locked_until) > now:
        raise _refuse(user.id, username, now, "locked")
    try:
        _HASHER.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise _refuse(user.id, username, now, "password") from None
    step = _accepted_step(user.totp_secret, code.strip(), now)
    if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
        raise _refuse(user.id, username, now, "code")
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    user.totp_last_step = step
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    record(session, user, "signed_in", user.username, {}, now)
    return user


def _accepted_step(secret: str, code: str, now: datetime) -> int | None:
    """The 30-second step (now, or one either side for clock drift) whose code this is."""
    if not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // totp.interval
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.at(step * totp.interval), code):
            return step
    return None


def open_session(session: Session, user: ConsoleUser, now: datetime) -> str:
    """A new session for a signed-in user; the token is for the cookie and is stored hashed."""
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            token_hash=token_hash(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + ABSOLUTE_TIMEOUT,
        )
    )
    return token


def resolve_session(session: Session, token: str, now: datetime) -> SignedIn | None:
    """The live session of a cookie's token, or None (unknown, ended, idle or too old)."""
    row = session.execute(
        select(ConsoleSession, ConsoleUser, Organisation)
        .join(ConsoleUser, ConsoleUser.id == ConsoleSession.user_id)
        .join(Organisation, Organisation.id == ConsoleUser.org_id)
        .where(ConsoleSession.token_hash == token_hash(token))
    ).first()
    if row is None:
        return None
    console_session, user, organisation = row
    last_seen = aware(console_session.last_seen_at)
    if (
        console_session.ended_at is not None
        or now >= aware(console_session.expires_at)
        or now - last_seen >= IDLE_TIMEOUT
        or user.status != "active"
    ):
        return None
    if now - last_seen >= TOUCH_EVERY:
        session.execute(
            update(ConsoleSession)
            .where(ConsoleSession.token_hash == console_session.token_hash)
            .values(last_seen_at=now)
        )
    return SignedIn(
        id=user.id,
        org_id=user.org_id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        locale=user.locale,
        org_name=organisation.name,
        org_kind=organisation.kind,
        zone=organisation.zone,
        csrf_token=console_session.csrf_token,
    )


def end_session(session: Session, token: str, now: datetime) -> None:
    """Sign out: the session's token is good no more."""
    session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.token_hash == token_hash(token), ConsoleSession.ended_at.is_(None))
        .values(ended_at=now)
    )


def set_locale(session: Session, user: Actor, locale: str, now: datetime) -> None:
    """The language the user reads the console in."""
    if locale not in LOCALES:
        raise InvalidInput(f"locale is one of {', '.join(LOCALES)}", field="locale")
    session.execute(update(ConsoleUser).where(ConsoleUser.id == user.id).values(locale=locale))
    record(session, user, "locale_set", "", {"locale": locale}, now)


def _action(
    user_id: uuid.UUID | None,
    org_id: uuid.UUID | None,
    action: str,
    target: str,
    detail: dict[str, Any],
    now: datetime,
) -> ConsoleAction:
    return ConsoleAction(
        id=new_id(),
        user_id=user_id,
        org_id=org_id,
        action=action,
        target=target,
        detail=detail,
        at=now,
    )


def record(
    session: Session,
    user: Actor,
    action: str,
    target: str,
    detail: dict[str, Any],
    now: datetime,
) -> None:
    """Write one line of the audit trail: who did what to what, and when."""
    session.add(_action(user.id, user.org_id, action, target, detail, now))
