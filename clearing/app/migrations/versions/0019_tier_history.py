"""tiers: the history of members' tier moves and of tier definitions

Revision ID: 0019
Revises: 0017
Create Date: 2026-11-30 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clearing.core.db import ExactDecimal

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tier_changes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("from_tier_id", sa.Uuid(), nullable=True),
        sa.Column("to_tier_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=12), nullable=False),
        sa.Column("qualifying_points", sa.BigInteger(), nullable=False),
        sa.Column("qualifying_spend", sa.BigInteger(), nullable=False),
        sa.Column("changed_by_key", sa.String(length=200), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "reason IN ('upgrade', 'downgrade', 'manual')",
            name=op.f("ck_tier_changes_reason_known"),
        ),
        sa.ForeignKeyConstraint(
            ["from_tier_id"],
            ["program_tiers.id"],
            name=op.f("fk_tier_changes_from_tier_id_program_tiers"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_tier_changes_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_tier_changes_program_id_programs")
        ),
        sa.ForeignKeyConstraint(
            ["to_tier_id"],
            ["program_tiers.id"],
            name=op.f("fk_tier_changes_to_tier_id_program_tiers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_changes")),
    )
    op.create_table(
        "program_tier_versions",
        sa.Column("tier_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("multiplier", ExactDecimal(12, 6), nullable=False),
        sa.Column("qualify_points", sa.BigInteger(), nullable=True),
        sa.Column("qualify_spend", sa.BigInteger(), nullable=True),
        sa.Column("privileges", sa.JSON(), nullable=False),
        sa.Column("changed_by_key", sa.String(length=200), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tier_id"],
            ["program_tiers.id"],
            name=op.f("fk_program_tier_versions_tier_id_program_tiers"),
        ),
        sa.PrimaryKeyConstraint("tier_id", "version", name=op.f("pk_program_tier_versions")),
    )
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.create_index("ix_tier_changes_member", ["member_id", "changed_at"])
        batch_op.create_index("ix_tier_changes_program", ["program_id", "changed_at"])
    with op.batch_alter_table("accruals", schema=None) as batch_op:
        batch_op.create_index("ix_accruals_member_created", ["member_id", "created_at"])
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.create_index("ix_members_program_created", ["program_id", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_index("ix_members_program_created")
    with op.batch_alter_table("accruals", schema=None) as batch_op:
        batch_op.drop_index("ix_accruals_member_created")
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_tier_changes_program")
        batch_op.drop_index("ix_tier_changes_member")
    op.drop_table("program_tier_versions")
    op.drop_table("tier_changes")
