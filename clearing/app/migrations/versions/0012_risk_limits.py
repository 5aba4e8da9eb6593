"""risk: limit rules as data (versioned) and their counters; the platform's default limits

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 13:00:00
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

from clearing.core.db import ExactDecimal

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_SHIPPED_AT = datetime(2026, 11, 30, tzinfo=UTC)

# The platform's defaults, version 1 of each (README "Risk controls" -> "Limits"): written here
# as data, not read from code, so that a later release changing its defaults cannot rewrite
# what was in force before.
_DEFAULTS: list[dict[str, object]] = [
    {
        "rule_id": "44136eb2-f1ce-5d55-bfcf-6dde2509dcde",
        "kind": "single_operation",
        "action": "accrual",
        "max_points": 10_000_000,
        "review_points": 1_000_000,
    },
    {
        "rule_id": "9618e691-26b7-5f98-b9b4-a65ad5c5787b",
        "kind": "single_operation",
        "action": "conversion",
        "max_points": 10_000_000,
        "review_points": 1_000_000,
    },
    {
        "rule_id": "45f49695-faf5-5517-8d25-604a57ecf57c",
        "kind": "single_operation",
        "action": "refund",
        "max_amount": 100_000_000,
        "review_amount": 10_000_000,
    },
    {
        "rule_id": "682eb3fe-1711-5d2d-9440-86680059ccf1",
        "kind": "merchant_transaction",
        "action": "authorisation",
        "max_amount": 10_000_000,
    },
    {
        "rule_id": "f3f25fd8-0284-59fb-8d7e-4dbd43ad496c",
        "kind": "merchant_transaction",
        "action": "capture",
        "max_amount": 10_000_000,
    },
    {
        "rule_id": "dbe9d75f-b7b8-5c63-b631-3411063aa386",
        "kind": "member_window",
        "action": "accrual",
        "period": "day",
        "max_points": 100_000_000,
    },
    {
        "rule_id": "b278d187-0d99-5298-8381-5749d8cf32cd",
        "kind": "conversion_day",
        "action": "conversion",
        "period": "day",
        "max_points": 20_000_000,
    },
    {
        "rule_id": "cc8d27c1-3ef2-5bee-82f1-38bb324c7419",
        "kind": "refund_share",
        "action": "refund",
        "period": "day",
        "max_share": Decimal("0.5"),
        "allowance": 100_000,
        "trailing_days": 30,
    },
]


def upgrade() -> None:
    rules = op.create_table(
        "risk_limit_rules",
        sa.Column("rule_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("max_count", sa.BigInteger(), nullable=True),
        sa.Column("max_points", sa.BigInteger(), nullable=True),
        sa.Column("max_amount", sa.BigInteger(), nullable=True),
        sa.Column("max_share", ExactDecimal(), nullable=True),
        sa.Column("review_count", sa.BigInteger(), nullable=True),
        sa.Column("review_points", sa.BigInteger(), nullable=True),
        sa.Column("review_amount", sa.BigInteger(), nullable=True),
        sa.Column("review_share", ExactDecimal(), nullable=True),
        sa.Column("allowance", sa.BigInteger(), nullable=True),
        sa.Column("trailing_days", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_org", sa.Uuid(), nullable=True),
        sa.Column("created_by_key", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("rule_id", "version", name=op.f("pk_risk_limit_rules")),
    )
    with op.batch_alter_table("risk_limit_rules", schema=None) as batch_op:
        batch_op.create_index(
            "ix_risk_limit_rules_slot", ["kind", "action", "period", "scope", "scope_id"]
        )
    op.create_table(
        "risk_limit_counters",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", "bucket", name=op.f("pk_risk_limit_counters")),
    )
    empty = dict.fromkeys(
        (
            "max_count",
            "max_points",
            "max_amount",
            "max_share",
            "review_count",
            "review_points",
            "review_amount",
            "review_share",
            "allowance",
            "trailing_days",
        )
    )
    op.bulk_insert(
        rules,
        [
            {
                **empty,
                "period": "",
                **row,
                "rule_id": uuid.UUID(str(row["rule_id"])),
                "version": 1,
                "scope": "platform",
                "scope_id": None,
                "enabled": True,
                "note": "shipped default",
                "created_at": _SHIPPED_AT,
                "created_by_org": None,
                "created_by_key": "migration 0012",
            }
            for row in _DEFAULTS
        ],
    )


def downgrade() -> None:
    op.drop_table("risk_limit_counters")
    op.drop_table("risk_limit_rules")
