"""Every ClearingError of every package follows the one rule of clearing/core/errors.py."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from clearing.core.db import transaction, violated_constraint
from clearing.core.errors import ClearingError, Conflict, InvalidInput, Kind, NotFound
from clearing.core.ledger import BALANCE_IN_RANGE, FLOOR_ZERO
from exchange import service as exchange
from exchange.schemas import BilateralRateCreate
from tests.factories import T0, build_world, member

PACKAGES = ("clearing", "issuers", "exchange", "settlement", "risk", "reports")


def every_error_class() -> list[type[ClearingError]]:
    """Every ClearingError subclass defined in our packages, after importing all their modules."""
    for name in PACKAGES:
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, f"{name}."):
            if ".migrations" not in module.name:
                importlib.import_module(module.name)
    found: list[type[ClearingError]] = []
    pending: list[type[ClearingError]] = [ClearingError]
    while pending:
        cls = pending.pop()
        if cls.__module__.split(".")[0] in PACKAGES:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: (c.__module__, c.__name__))


ERRORS = every_error_class()


def test_the_walk_finds_the_errors_of_every_domain() -> None:
    modules = {cls.__module__.split(".")[0] for cls in ERRORS}
    assert {"clearing", "issuers", "exchange", "settlement"} <= modules
    assert len(ERRORS) > 40


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_each_error_answers_the_status_of_its_kind(cls: type[ClearingError]) -> None:
    assert isinstance(cls.kind, Kind)
    assert cls.status == cls.kind.value
    # A 422 is malformed input and a 409 a refusal by state, each from its own family, so that
    # `except InvalidInput` and `except Conflict` mean what the rule says.
    assert (cls.kind is Kind.MALFORMED) == issubclass(cls, InvalidInput)
    assert (cls.kind is Kind.STATE) == issubclass(cls, Conflict)
    assert (cls.kind is Kind.NOT_FOUND) == issubclass(cls, NotFound)


def test_a_code_has_one_status_whichever_class_raises_it() -> None:
    statuses: dict[str, set[int]] = {}
    for cls in ERRORS:
        statuses.setdefault(cls.code, set()).add(cls.status)
    assert {code: found for code, found in statuses.items() if len(found) > 1} == {}


# Business refusals decided by what the platform holds (the rate, the clock's history, the
# organisation), once answered 422 by some paths: now each is a 409 by the rule.
REFUSALS = {
    "not_whole_blocks": 409,
    "conversion_too_small": 409,
    "rate_history": 409,
    "point_value_history": 409,
    "fee_rate_not_applicable": 409,
    "insufficient_points": 409,
    "capture_exceeds_hold": 409,
    "invalid_input": 422,
    "amount_out_of_range": 422,
    "duplicate_json_key": 422,
    "settlement_invariant": 500,
    "statement_input": 500,
}


def test_the_named_refusals_answer_as_the_rule_says() -> None:
    statuses = {cls.code: cls.status for cls in ERRORS}
    assert {code: statuses.get(code) for code in REFUSALS} == REFUSALS


def test_a_status_that_disagrees_with_the_kind_fails_at_definition() -> None:
    with pytest.raises(TypeError, match="status"):

        class _Wrong(ClearingError):
            kind = Kind.STATE
            status = 422

    with pytest.raises(ValueError, match="418"):

        class _NoKind(ClearingError):
            status = 418


def test_a_rate_in_the_past_is_refused_as_history(engine: Engine) -> None:
    w = build_world(engine)
    request = BilateralRateCreate(
        source_program="MOBILE",
        target_program="BANKB",
        source_block=5000,
        target_block=2500,
        min_source_points=5000,
        effective_from=T0 - timedelta(minutes=1),
    )
    with pytest.raises(exchange.RateHistory) as refused, transaction(engine) as session:
        exchange.set_bilateral_rate(session, w.carrier, request, T0)
    assert refused.value.status == 409
    assert refused.value.problem()["field"] == "effective_from"


@pytest.mark.parametrize(
    ("update", "constraint"),
    [
        ("UPDATE balances SET held = balance + 1 WHERE floor_zero", FLOOR_ZERO),
        ("UPDATE balances SET balance = 2000000000000000000", BALANCE_IN_RANGE),
    ],
)
def test_a_database_error_names_its_constraint(
    engine: Engine, update: str, constraint: str
) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    with pytest.raises(DBAPIError) as error, transaction(engine) as session:
        session.execute(text(update))
    assert violated_constraint(error.value) == constraint
