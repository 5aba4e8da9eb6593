"""Member tokens: an issuer's one-time, short-lived proof that its member consents to one
checkout (payment token) or to one link of another issuer's member (link token).

A token is `pt_` or `lt_` and 43 base64url characters: HMAC-SHA256, under a 256-bit secret the
platform derives from its own key, of the token's random id. Only its SHA-256 is stored. Why
derived rather than drawn at random: minting is idempotent like every POST, and a replay must
hand back the same token without the token ever being written down (the idempotency store
keeps the result without it); deriving it again from the stored id does that. Guessing a token
means breaking HMAC-SHA256 under a secret the database does not hold; the hash lookup is an
exact match, so a wrong token reveals nothing but "no".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import datetime, timedelta
from typing import cast

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from clearing.core.db import Sql
from clearing.core.errors import ClearingError, Conflict, NotFound
from clearing.core.idempotency import Operation, run_once
from clearing.core.ids import new_id
from clearing.core.kinds import OrgKind
from clearing.web.context import Caller
from issuers import repository
from issuers.contexts import CheckoutContext
from issuers.members import active_member, member_of
from issuers.models import Member, MemberLink, MemberToken, MerchantTerm, Organisation, Program
from issuers.programs import own_program
from issuers.repository import MemberRef
from issuers.schemas import (
    LinkTokenCreate,
    MemberLinkCreate,
    MemberLinkOut,
    MemberTokenIssued,
    MemberTokenOut,
    MerchantTrustOut,
    MerchantTrustSet,
    PaymentTokenCreate,
)

PAYMENT = "payment"
LINK = "link"
DEFAULT_TTL = {PAYMENT: timedelta(seconds=180), LINK: timedelta(seconds=600)}
_PREFIX = {PAYMENT: "pt_", LINK: "lt_"}


class ConsentRequired(ClearingError):
    """The one answer while the member's consent is not established: whether the member exists,
    whether the token is wrong, expired, used or another member's, or whether the points would
    cover the amount, all look the same to the caller."""

    status = 403
    code = "consent_required"
    title = "The member's consent is required"


class PaymentTokenLimit(Conflict):
    code = "payment_token_limit"
    title = "Amount exceeds what the payment token allows"


CHECKOUT_REFUSED = (
    "no valid payment token of this member for this program: "
    "ask the member for a new payment code from their issuer"
)
LINK_REFUSED = (
    "no valid link token of this source member: "
    "ask the member for a new link code from the source issuer"
)

_TOKENS = cast(Table, MemberToken.__table__)
_MEMBERS = cast(Table, Member.__table__)
_PROGRAMS = cast(Table, Program.__table__)
_AT = _TOKENS.c.expires_at.type
_USE = {"used_at": bindparam("b_used_at", type_=_AT), "used_by_org_id": bindparam("b_by")}
_CONSUME_PAYMENT = Sql(
    update(_TOKENS)
    .where(
        _TOKENS.c.id == bindparam("b_id"),
        _TOKENS.c.used_at.is_(None),
        _TOKENS.c.expires_at > bindparam("b_now", type_=_AT),
    )
    .values(_USE)
    .returning(_TOKENS.c.id)
)
_CONSUME_LINK = Sql(
    update(_TOKENS)
    .where(
        _TOKENS.c.token_hash == bindparam("b_hash"),
        _TOKENS.c.purpose == LINK,
        _TOKENS.c.used_at.is_(None),
        _TOKENS.c.expires_at > bindparam("b_now", type_=_AT),
        _TOKENS.c.member_id
        == select(_MEMBERS.c.id)
        .join(_PROGRAMS, _PROGRAMS.c.id == _MEMBERS.c.program_id)
        .where(
            _PROGRAMS.c.code == bindparam("b_code"),
            _MEMBERS.c.external_id == bindparam("b_external"),
        )
        .scalar_subquery(),
    )
    .values(_USE)
    .returning(_TOKENS.c.member_id)
)


def token_secret(platform_key: Ed25519PrivateKey) -> bytes:
    """The secret tokens are derived under: HKDF of the platform key, for this use only."""
    raw = platform_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"clearing member tokens v1")
    return hkdf.derive(raw)


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


def _token(secret: bytes, purpose: str, token_id: uuid.UUID) -> str:
    mac = hmac.new(secret, purpose.encode() + b"\0" + token_id.bytes, hashlib.sha256).digest()
    return _PREFIX[purpose] + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def mint_payment_token(
    session: Session,
    caller: Caller,
    code: str,
    external_id: str,
    req: PaymentTokenCreate,
    now: datetime,
    idempotency_key: str,
    secret: bytes,
) -> tuple[MemberTokenOut, bool]:
    """The issuer mints a payment token for its member: consent to one checkout."""
    return _mint(
        session, caller, code, external_id, PAYMENT, req.ttl_seconds, req.max_amount, now,
        idempotency_key, secret,
    )  # fmt: skip


def mint_link_token(
    session: Session,
    caller: Caller,
    code: str,
    external_id: str,
    req: LinkTokenCreate,
    now: datetime,
    idempotency_key: str,
    secret: bytes,
) -> tuple[MemberTokenOut, bool]:
    """The source issuer mints a link token for its member: consent to one member link."""
    return _mint(
        session, caller, code, external_id, LINK, req.ttl_seconds, None, now, idempotency_key,
        secret,
    )  # fmt: skip


def _mint(
    session: Session,
    caller: Caller,
    code: str,
    external_id: str,
    purpose: str,
    ttl_seconds: int | None,
    max_amount: int | None,
    now: datetime,
    idempotency_key: str,
    secret: bytes,
) -> tuple[MemberTokenOut, bool]:
    def issue(_: None) -> MemberTokenIssued:
        program = own_program(session, caller, code)
        member = active_member(session, program, external_id)
        token_id = new_id()
        expires_at = now + (timedelta(seconds=ttl_seconds) if ttl_seconds else DEFAULT_TTL[purpose])
        session.add(
            MemberToken(
                id=token_id,
                purpose=purpose,
                token_hash=token_hash(_token(secret, purpose, token_id)),
                member_id=member.id,
                max_amount=max_amount,
                created_at=now,
                expires_at=expires_at,
            )
        )
        session.flush()
        return MemberTokenIssued(
            id=token_id,
            purpose=purpose,
            program=code,
            external_id=external_id,
            expires_at=expires_at,
            max_amount=max_amount,
        )

    request = {
        "program": code,
        "external_id": external_id,
        "ttl_seconds": ttl_seconds,
        "max_amount": max_amount,
    }
    operation = Operation(f"{purpose}_token", request, MemberTokenIssued, issue)
    issued, replayed = run_once(session, caller.org_id, idempotency_key, operation, now)
    token = _token(secret, purpose, issued.id)
    return MemberTokenOut.model_validate({**issued.model_dump(), "token": token}), replayed


def checkout_member(
    session: Session,
    context: CheckoutContext,
    token_presented: bool,
    points_amount: int,
    now: datetime,
) -> MemberRef:
    """The member a checkout may spend from, with the member's consent: a valid payment token
    (used up here, in the checkout's transaction) or the issuer's trust in the merchant.

    Without consent every refusal is `ConsentRequired` with one detail; the member's own state
    (inactive, short of points) is told only once consent is established. A refused checkout
    rolls back its transaction, the token's use included: a token is spent only by the hold it
    paid for, so a cashier's wrong amount does not cost the member a new code.
    """
    if not token_presented:
        if context.trusted:
            return context.member.active_member()
        raise ConsentRequired(CHECKOUT_REFUSED)
    token = context.token
    if token is None or token.used_at is not None or token.expires_at <= now:
        raise ConsentRequired(CHECKOUT_REFUSED)
    member = context.member.active_member()
    if token.max_amount is not None and points_amount > token.max_amount:
        raise PaymentTokenLimit(
            "the payment token allows less than this amount", max_amount=token.max_amount
        )
    # The conditional update decides between concurrent uses of one token: one wins the row.
    used = _CONSUME_PAYMENT.first(
        session,
        {"b_id": token.id, "b_now": now, "b_used_at": now, "b_by": context.member.caller.id},
    )
    if used is None:
        raise ConsentRequired(CHECKOUT_REFUSED)
    return member


def _use_link_token(
    session: Session, caller: Caller, code: str, external_id: str, token: str, now: datetime
) -> uuid.UUID:
    """The source member named, if `token` is a valid link token of exactly that member; used
    up. Otherwise `ConsentRequired`, the same whether the member or the token is wrong."""
    used = _CONSUME_LINK.first(
        session,
        {
            "b_hash": token_hash(token),
            "b_now": now,
            "b_used_at": now,
            "b_by": caller.org_id,
            "b_code": code,
            "b_external": external_id,
        },
    )
    if used is None:
        raise ConsentRequired(LINK_REFUSED)
    return cast(uuid.UUID, used.member_id)


def link_members(
    session: Session, caller: Caller, req: MemberLinkCreate, now: datetime
) -> MemberLinkOut:
    """The target issuer lets one of its members receive points converted from a source member,
    with that member's consent: a link token minted by the source issuer."""
    target_program = own_program(session, caller, req.target_program)
    target = member_of(session, target_program, req.target_external_id)
    source_id = _use_link_token(
        session, caller, req.source_program, req.source_external_id, req.link_token, now
    )
    link = repository.member_link(session, source_id, target.id)
    if link is None:
        link = MemberLink(
            id=new_id(), source_member_id=source_id, target_member_id=target.id, created_at=now
        )
        session.add(link)
        session.flush()
    return MemberLinkOut(
        id=link.id,
        source_program=req.source_program,
        source_external_id=req.source_external_id,
        target_program=req.target_program,
        target_external_id=req.target_external_id,
    )


def set_merchant_trust(
    session: Session, caller: Caller, code: str, merchant_id: uuid.UUID, req: MerchantTrustSet
) -> MerchantTrustOut:
    """The issuer lets a merchant check out its program's points without a payment token, or
    stops letting it; the fee rate of the term is left as the operator set it."""
    program = own_program(session, caller, code)
    merchant = session.get(Organisation, merchant_id)
    if merchant is None or merchant.kind != OrgKind.MERCHANT:
        raise NotFound("unknown merchant")
    term = repository.merchant_term(session, merchant_id, program.id)
    if term is None:
        term = MerchantTerm(
            id=new_id(), merchant_id=merchant_id, program_id=program.id, fee_rate=None
        )
        session.add(term)
    term.checkout_without_token = req.checkout_without_token
    session.flush()
    return MerchantTrustOut(
        program=program.code,
        merchant_id=merchant_id,
        checkout_without_token=term.checkout_without_token,
    )
