"""Errors of the platform: each a class with an HTTP status and a stable machine-readable code."""

from __future__ import annotations

from typing import Any, ClassVar


class ClearingError(Exception):
    """Base of every domain error; rendered as RFC 9457 problem+json by the API."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """The problem+json body of this error."""
        body: dict[str, Any] = {
            "type": f"https://clearing.example/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class NotFound(ClearingError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(ClearingError):
    status = 409
    code = "conflict"
    title = "Conflict"


class InvalidInput(ClearingError):
    status = 422
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


class Unauthorized(ClearingError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(ClearingError):
    status = 403
    code = "forbidden"
    title = "Forbidden"
