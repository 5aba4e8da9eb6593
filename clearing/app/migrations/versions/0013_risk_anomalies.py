"""risk: the daily anomaly scan's flags

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clearing.core.db  # custom column types (ExactDecimal)

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_anomalies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("subject_kind", sa.String(length=12), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("program_code", sa.String(length=40), nullable=True),
        sa.Column("feature", sa.String(length=40), nullable=False),
        sa.Column("observed", clearing.core.db.ExactDecimal(precision=24, scale=6), nullable=False),
        sa.Column("baseline", clearing.core.db.ExactDecimal(precision=24, scale=6), nullable=False),
        sa.Column("score", clearing.core.db.ExactDecimal(precision=24, scale=6), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("cleared_by", sa.Uuid(), nullable=True),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_anomalies")),
        sa.UniqueConstraint(
            "business_date",
            "subject_kind",
            "subject_id",
            "feature",
            name="uq_risk_anomalies_day_subject_feature",
        ),
        sa.CheckConstraint(
            "status IN ('open', 'cleared')", name=op.f("ck_risk_anomalies_status_known")
        ),
        sa.CheckConstraint(
            "subject_kind IN ('member', 'organisation')",
            name=op.f("ck_risk_anomalies_subject_kind_known"),
        ),
    )
    with op.batch_alter_table("risk_anomalies", schema=None) as batch_op:
        batch_op.create_index(
            "ix_risk_anomalies_status_date", ["status", "business_date"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("risk_anomalies", schema=None) as batch_op:
        batch_op.drop_index("ix_risk_anomalies_status_date")
    op.drop_table("risk_anomalies")
