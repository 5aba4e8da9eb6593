"""The risk policy as the app wires it: the rules in their order, and how each reviewable
operation is rebuilt from its stored request when an operator approves it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from clearing.core.config import Settings
from clearing.core.idempotency import Operation
from clearing.core.policy import bind_policy
from clearing.web.context import Caller
from exchange import service as exchange
from exchange.rates import rate_graph
from exchange.schemas import ConversionCreate, RefundCreate
from issuers import accruals, events
from issuers.earning_schemas import EventBatchCreate, EventCreate
from issuers.schemas import AccrualBatchCreate, AccrualCreate
from risk.agreements import AgreementRule, ArbitrageRule, InterchangeRule
from risk.exposure import ExposureRule
from risk.freezes import FreezeRule
from risk.limits import LimitRule
from risk.policy import OperationBuilder, RiskPolicy, Rule


def _accrual(
    session: Session, caller: Caller, request: Mapping[str, Any], now: datetime, _: datetime
) -> Operation[Any]:
    return accruals.accrual_operation(session, caller, AccrualCreate.model_validate(request), now)


def _accrual_batch(
    session: Session, caller: Caller, request: Mapping[str, Any], now: datetime, _: datetime
) -> Operation[Any]:
    req = AccrualBatchCreate.model_validate(request)
    return accruals.accrual_batch_operation(session, caller, req, now)


def _conversion(
    session: Session,
    caller: Caller,
    request: Mapping[str, Any],
    now: datetime,
    requested_at: datetime,
) -> Operation[Any]:
    req = ConversionCreate.model_validate(request)
    return exchange.conversion_operation(session, caller, req, now, requested_at)


def _refund(
    session: Session, caller: Caller, request: Mapping[str, Any], now: datetime, _: datetime
) -> Operation[Any]:
    fields = {k: v for k, v in request.items() if k != "checkout"}
    checkout_id = uuid.UUID(str(request["checkout"]))
    req = RefundCreate.model_validate(fields)
    return exchange.refund_operation(session, caller, checkout_id, req, now)


def _program_event(
    session: Session, caller: Caller, request: Mapping[str, Any], now: datetime, _: datetime
) -> Operation[Any]:
    fields = {k: v for k, v in request.items() if k != "program"}
    req = EventCreate.model_validate(fields)
    return events.event_operation(session, caller, str(request["program"]), req, now)


def _program_event_batch(
    session: Session, caller: Caller, request: Mapping[str, Any], now: datetime, _: datetime
) -> Operation[Any]:
    req = EventBatchCreate.model_validate({"items": request["items"]})
    return events.event_batch_operation(session, caller, str(request["program"]), req, now)


REVIEWABLE: Mapping[str, OperationBuilder] = {
    "accrual": _accrual,
    "accrual_batch": _accrual_batch,
    "conversion": _conversion,
    "refund": _refund,
    "program_event": _program_event,
    "program_event_batch": _program_event_batch,
}
"""The operations a control may send to review (a till's authorisation, capture and void are
decided on the spot: a checkout cannot wait for an operator)."""


def risk_policy(settings: Settings) -> RiskPolicy:
    """The platform's policy: its rules, reading rules first, counting rules last (in this
    order, which is also the order their rows are locked in)."""
    rules: list[Rule] = [
        FreezeRule(),
        InterchangeRule(),
        ArbitrageRule(rate_graph),
        AgreementRule(settings.zone, settings.cutoff),
        LimitRule(settings.zone, settings.cutoff),
        ExposureRule(settings.zone, settings.cutoff),
    ]
    return RiskPolicy(rules=rules, operations=REVIEWABLE)


def open_engine(settings: Settings) -> Engine:
    """The database of `settings`, its ledger options and the risk policy bound."""
    return bind_policy(settings.open_engine(), risk_policy(settings))
