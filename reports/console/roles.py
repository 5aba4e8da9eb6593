"""Who may see which page of the console: one table, read by the navigation and every route."""

from __future__ import annotations

from enum import StrEnum

from clearing.core.kinds import OrgKind


class Role(StrEnum):
    """What a console user does for their organisation."""

    FINANCE = "finance"
    OPERATOR = "operator"
    RISK_ANALYST = "risk_analyst"
    VIEWER = "viewer"


class Page(StrEnum):
    """A part of the console; its value is its path under /console."""

    DASHBOARD = ""
    BATCHES = "batches"
    POSITIONS = "positions"
    REPORTS = "reports"
    REVIEWS = "reviews"
    RULES = "rules"
    PARTIES = "parties"
    MEMBERS = "members"
    AUDIT = "audit"


_EVERYONE = frozenset(Role)
ALLOWED: dict[Page, frozenset[Role]] = {
    Page.DASHBOARD: _EVERYONE,
    Page.REPORTS: _EVERYONE,
    Page.BATCHES: frozenset({Role.FINANCE, Role.OPERATOR}),
    Page.POSITIONS: frozenset({Role.FINANCE, Role.OPERATOR}),
    Page.REVIEWS: frozenset({Role.RISK_ANALYST, Role.OPERATOR}),
    Page.RULES: frozenset({Role.RISK_ANALYST, Role.OPERATOR}),
    Page.PARTIES: frozenset({Role.OPERATOR}),
    Page.MEMBERS: frozenset({Role.RISK_ANALYST, Role.OPERATOR}),
    Page.AUDIT: frozenset({Role.OPERATOR}),
}
"""Every page's roles; a page missing here is a KeyError at import of its route, not an open door."""

PLATFORM_ROLES = frozenset({Role.OPERATOR, Role.RISK_ANALYST})
"""Roles that act on every party: only people of the platform organisation hold them."""


def may_see(role: str, page: Page) -> bool:
    """Whether a user of `role` may open `page`."""
    return role in ALLOWED[page]


def may_hold(role: Role, org_kind: str) -> bool:
    """Whether a user of an organisation of `org_kind` may be given `role`."""
    return role not in PLATFORM_ROLES or org_kind == OrgKind.PLATFORM
