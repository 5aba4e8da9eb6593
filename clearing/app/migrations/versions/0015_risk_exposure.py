"""risk: settlement exposure caps, running positions, settlement payments and restrictions

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clearing.core.db

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_exposure_caps",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cap", sa.BigInteger(), nullable=True),
        sa.Column("limit_amount", sa.BigInteger(), nullable=True),
        sa.Column("collateral", sa.BigInteger(), nullable=True),
        sa.Column("multiple", clearing.core.db.ExactDecimal(precision=12, scale=4), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("set_by_org", sa.Uuid(), nullable=False),
        sa.Column("set_by_key", sa.String(length=200), nullable=True),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "org_id", "currency", "version", name=op.f("pk_risk_exposure_caps")
        ),
    )
    op.create_table(
        "risk_exposure_positions",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "org_id", "currency", "business_date", "slot", name=op.f("pk_risk_exposure_positions")
        ),
    )
    op.create_table(
        "risk_settlement_payments",
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("recorded_by_org", sa.Uuid(), nullable=False),
        sa.Column("recorded_by_key", sa.String(length=200), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "org_id", name=op.f("pk_risk_settlement_payments")),
    )
    op.create_table(
        "risk_settlement_restrictions",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("restricted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("restricted_by", sa.String(length=60), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by_org", sa.Uuid(), nullable=True),
        sa.Column("lifted_by_key", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("org_id", "batch_id", name=op.f("pk_risk_settlement_restrictions")),
    )
    with op.batch_alter_table("risk_settlement_restrictions", schema=None) as batch_op:
        batch_op.create_index("ix_risk_settlement_restrictions_open", ["org_id", "lifted_at"])


def downgrade() -> None:
    op.drop_table("risk_settlement_restrictions")
    op.drop_table("risk_settlement_payments")
    op.drop_table("risk_exposure_positions")
    op.drop_table("risk_exposure_caps")
