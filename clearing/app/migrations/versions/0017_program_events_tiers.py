"""programs: tiers, members' tiers and the events rules earn points from

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clearing.core.db import ExactDecimal

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "program_tiers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("multiplier", ExactDecimal(12, 6), nullable=False),
        sa.Column("qualify_points", sa.BigInteger(), nullable=True),
        sa.Column("qualify_spend", sa.BigInteger(), nullable=True),
        sa.Column("privileges", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_program_tiers_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_tiers")),
        sa.UniqueConstraint("program_id", "code", name="uq_program_tiers_code"),
        sa.UniqueConstraint("program_id", "rank", name="uq_program_tiers_rank"),
    )
    op.create_table(
        "member_tiers",
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("tier_id", sa.Uuid(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_tiers_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["tier_id"], ["program_tiers.id"], name=op.f("fk_member_tiers_tier_id_program_tiers")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_tiers")),
    )
    op.create_table(
        "program_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("posted_by", sa.Uuid(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spend", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("accrual_id", sa.Uuid(), nullable=True),
        sa.Column("explanation", sa.JSON(), nullable=False),
        sa.Column("refunded_spend", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["accrual_id"], ["accruals.id"], name=op.f("fk_program_events_accrual_id_accruals")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_program_events_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["posted_by"],
            ["organisations.id"],
            name=op.f("fk_program_events_posted_by_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_program_events_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_events")),
    )
    with op.batch_alter_table("program_events", schema=None) as batch_op:
        batch_op.create_index("ix_program_events_member", ["member_id", "occurred_at"])
        batch_op.create_index(
            "ix_program_events_program_kind", ["program_id", "kind", "occurred_at"]
        )


def downgrade() -> None:
    with op.batch_alter_table("program_events", schema=None) as batch_op:
        batch_op.drop_index("ix_program_events_program_kind")
        batch_op.drop_index("ix_program_events_member")
    op.drop_table("program_events")
    op.drop_table("member_tiers")
    op.drop_table("program_tiers")
