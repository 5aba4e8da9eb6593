"""Maker-checker in a real browser: one operator asks to approve a review, another operator of
the platform confirms it, and only then is the review approved.

Written against the reviews page's contract (reports/console/pages, the operators' pages):
pending reviews in `<table id="reviews">`, a row `review-{id}` with the buttons `approve-{id}`
and `reject-{id}` that ask for a dual-control request; pending requests in
`<table id="requests">`, a row `request-{id}` with `confirm-{id}` / `decline-{id}` shown only to
another user of the same organisation. The module has a server of its own: its limit rule sends
accruals to review, which no other test expects.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from clearing.core.db import transaction
from clearing.core.policy import PendingReview
from clearing.core.timeutil import utcnow
from clearing.web.context import Caller
from reports.console.roles import Role
from risk.limits import set_rule
from risk.models import Review
from risk.schemas import LimitRuleSet
from tests.browser.conftest import WAIT, Browser, Live, screenshot, sign_in_with_browser, wait_for
from tests.factories import accrue
from tests.reports.console_support import console_user


def _review_held(live: Live) -> uuid.UUID:
    """An accrual above a review threshold, held for review through the real services."""
    world = live.days.world
    engine = live.app.state.engine
    now = utcnow()
    rule: dict[str, Any] = {
        "kind": "member_window",
        "action": "accrual",
        "period": "hour",
        "review_points": 600,
    }
    with transaction(engine) as session:
        set_rule(
            session,
            Caller(world.platform.org_id, "platform", "ops-key"),
            LimitRuleSet.model_validate(rule),
            now,
        )
    with pytest.raises(PendingReview) as held:
        accrue(engine, world.bank_a, "BANKA", "BANKA-bob", 700, now=now)
    return uuid.UUID(held.value.problem()["review_id"])


def _status(live: Live, review_id: uuid.UUID) -> str:
    with transaction(live.app.state.engine) as session:
        return str(session.scalar(select(Review.status).where(Review.id == review_id)))


def test_a_review_is_approved_by_a_second_operator_after_the_first_asked(
    new_chrome: Browser, live: Live
) -> None:
    review_id = _review_held(live)
    platform = live.days.world.platform.org_id
    maker = console_user(live.app, platform, Role.OPERATOR)
    checker = console_user(live.app, platform, Role.OPERATOR)

    first = new_chrome()
    sign_in_with_browser(first, live, maker)
    first.get(f"{live.base_url}/console/reviews")
    wait_for(first, f"#reviews #review-{review_id}")
    screenshot(first, "reviews")
    first.find_element(By.ID, f"approve-{review_id}").click()
    wait_for(first, "#requests tr[id^='request-']")
    rows = first.find_elements(By.CSS_SELECTOR, "#requests tr[id^='request-']")
    assert len(rows) == 1
    request_id = str(rows[0].get_attribute("id")).removeprefix("request-")
    # The one who asked cannot confirm: the button is not even shown to them.
    assert first.find_elements(By.ID, f"confirm-{request_id}") == []
    assert _status(live, review_id) == "pending"

    second = new_chrome()
    sign_in_with_browser(second, live, checker)
    second.get(f"{live.base_url}/console/reviews")
    wait_for(second, f"#confirm-{request_id}")
    confirm = second.find_element(By.ID, f"confirm-{request_id}")
    confirm.click()
    WebDriverWait(second, WAIT).until(expected_conditions.staleness_of(confirm))
    wait_for(second, "#reviews")
    assert _status(live, review_id) == "approved"
    assert second.find_elements(By.ID, f"review-{review_id}") == []  # no longer pending
