"""risk: freezes and the blocklist

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_freezes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=True),
        sa.Column("external_id", sa.String(length=100), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=True),
        sa.Column("hold_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("frozen_by_org", sa.Uuid(), nullable=False),
        sa.Column("frozen_by_key", sa.String(length=200), nullable=True),
        sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_reason", sa.Text(), nullable=True),
        sa.Column("lifted_by_org", sa.Uuid(), nullable=True),
        sa.Column("lifted_by_key", sa.String(length=200), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_freezes")),
    )
    with op.batch_alter_table("risk_freezes", schema=None) as batch_op:
        batch_op.create_index("ix_risk_freezes_active", ["lifted_at", "subject_id"])
        batch_op.create_index("ix_risk_freezes_subject", ["subject_id", "frozen_at"])
    op.create_table(
        "risk_blocklist",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("added_by_org", sa.Uuid(), nullable=False),
        sa.Column("added_by_key", sa.String(length=200), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_reason", sa.Text(), nullable=True),
        sa.Column("removed_by_org", sa.Uuid(), nullable=True),
        sa.Column("removed_by_key", sa.String(length=200), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_blocklist")),
    )
    with op.batch_alter_table("risk_blocklist", schema=None) as batch_op:
        batch_op.create_index("ix_risk_blocklist_program", ["program_id", "external_id"])


def downgrade() -> None:
    op.drop_table("risk_blocklist")
    op.drop_table("risk_freezes")
