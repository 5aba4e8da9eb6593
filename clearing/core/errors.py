"""Errors of the platform: each a class with a kind, an HTTP status and a stable code.

The rule (one, for every ClearingError of every package): a class declares its `kind`, and the
kind alone gives its status.

- 422 MALFORMED (`InvalidInput` and its subclasses): the request's own content is wrong, judged
  from the request and the platform's constants alone: syntax, types, missing or unknown
  fields, a field outside its range (an amount above MAX_AMOUNT, a date beyond the horizon
  from now) or two fields of one request that contradict each other. The range of the
  platform's numbers is such a constant: an amount that a rounding or a balance would take
  beyond MAX_AMOUNT or BALANCE_LIMIT is `amount_out_of_range`, 422, wherever it arises.
- 409 STATE (`Conflict` and its subclasses): a well-formed request that what the platform holds
  refuses: stored rows (a rate's blocks and minimum, a balance, a hold, a quote, a key, a
  name taken, an organisation's kind, a batch) or its history (nothing takes effect before
  now, or before the latest version). The same request may succeed in another state. Every
  business refusal is one of these.
- 400 FRAMING: the HTTP request around the payload (Content-Length, a missing or repeated
  Idempotency-Key header). 401 UNAUTHENTICATED: the signature. 403 FORBIDDEN: the caller may
  not do this. 404 NOT_FOUND. 413 TOO_LARGE: the body.
- 500 OUR_FAULT: an invariant of ours broke (never the caller's doing).
- 202 ACCEPTED is not a refusal: a risk control holds the operation for an operator's review
  (`clearing.core.policy.PendingReview`); it travels as an error only so that the operation's
  own writes roll back.

An error may carry `kept`: writes that must outlive the rollback (a risk decision, a pending
review). `clearing.core.db.transaction` runs them in a transaction of their own.

tests/clearing/test_errors.py walks every subclass and holds each to this rule.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, ClassVar


class Kind(enum.Enum):
    """Why a request is refused; its value is the HTTP status (see the module's rule)."""

    ACCEPTED = 202
    FRAMING = 400
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    STATE = 409
    TOO_LARGE = 413
    MALFORMED = 422
    OUR_FAULT = 500


def problem_body(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem+json document with our stable `code`."""
    return {
        "type": f"https://clearing.example/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }


class ClearingError(Exception):
    """Base of every domain error; rendered as RFC 9457 problem+json by the API.

    A subclass sets `kind` (its status follows); one that sets only `status` gets the kind of
    that status, and a status no kind has fails at import.
    """

    kind: ClassVar[Kind] = Kind.FRAMING
    status: ClassVar[int] = Kind.FRAMING.value
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"
    kept: Callable[[Any], None] | None = None
    """Writes that outlive the rollback, given a fresh session (see the module's docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            if "status" in cls.__dict__ and cls.__dict__["status"] != cls.kind.value:
                raise TypeError(f"{cls.__name__}: status {cls.status} is not {cls.kind}'s")
            cls.status = cls.kind.value
        elif "status" in cls.__dict__:
            cls.kind = Kind(cls.status)

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """The problem+json body of this error."""
        return {**problem_body(self.status, self.code, self.title, self.detail), **self.extra}


class NotFound(ClearingError):
    kind = Kind.NOT_FOUND
    code = "not_found"
    title = "Not found"


class Conflict(ClearingError):
    kind = Kind.STATE
    code = "conflict"
    title = "Conflict"


class InvalidInput(ClearingError):
    kind = Kind.MALFORMED
    code = "invalid_input"
    title = "Invalid input"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    title = "Idempotency key reused with a different request"


class InsufficientPoints(Conflict):
    code = "insufficient_points"
    title = "Insufficient available points"


class InactiveParty(Conflict):
    code = "inactive"
    title = "Inactive organisation, program or member"


class Forbidden(ClearingError):
    kind = Kind.FORBIDDEN
    code = "forbidden"
    title = "Forbidden"
