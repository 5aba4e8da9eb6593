"""programs: reversals of spent points (member debts), adjustments, transfers

Revision ID: 0020
Revises: 0017
Create Date: 2026-11-30 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "spent_reversal",
                sa.String(length=16),
                server_default="take_remaining",
                nullable=False,
            )
        )
    op.create_table(
        "member_debts",
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points >= 0", name=op.f("ck_member_debts_points_not_negative")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_debts_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_debts")),
    )
    op.create_table(
        "member_debt_movements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('recorded', 'written_off', 'repaid')",
            name=op.f("ck_member_debt_movements_kind_known"),
        ),
        sa.CheckConstraint("points > 0", name=op.f("ck_member_debt_movements_points_positive")),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_member_debt_movements_entry_id_journal_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_debt_movements_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_debt_movements")),
    )
    with op.batch_alter_table("member_debt_movements", schema=None) as batch_op:
        batch_op.create_index("ix_member_debt_movements_member", ["member_id", "entry_id"])
    op.create_table(
        "adjustments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("direction", sa.String(length=6), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("reason_code", sa.String(length=40), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("proposed_key", sa.String(length=100), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "direction IN ('credit', 'debit')", name=op.f("ck_adjustments_direction_known")
        ),
        sa.CheckConstraint(
            "status IN ('proposed', 'approved', 'rejected')",
            name=op.f("ck_adjustments_status_known"),
        ),
        sa.CheckConstraint("points > 0", name=op.f("ck_adjustments_points_positive")),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_adjustments_entry_id_journal_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_adjustments_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_adjustments_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjustments")),
    )
    with op.batch_alter_table("adjustments", schema=None) as batch_op:
        batch_op.create_index("ix_adjustments_program", ["program_id", "proposed_at"])
    op.create_table(
        "adjustment_steps",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("adjustment_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.String(length=12), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "step IN ('proposed', 'approved', 'rejected')",
            name=op.f("ck_adjustment_steps_step_known"),
        ),
        sa.ForeignKeyConstraint(
            ["adjustment_id"],
            ["adjustments.id"],
            name=op.f("fk_adjustment_steps_adjustment_id_adjustments"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_adjustment_steps_org_id_organisations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjustment_steps")),
    )
    with op.batch_alter_table("adjustment_steps", schema=None) as batch_op:
        batch_op.create_index("ix_adjustment_steps_adjustment", ["adjustment_id", "at"])
    op.create_table(
        "program_transfer_rules",
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("fee_points", sa.BigInteger(), nullable=False),
        sa.Column("min_points", sa.BigInteger(), nullable=False),
        sa.Column("max_points", sa.BigInteger(), nullable=True),
        sa.Column("changed_key", sa.String(length=100), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "fee_points >= 0", name=op.f("ck_program_transfer_rules_fee_not_negative")
        ),
        sa.CheckConstraint("min_points >= 1", name=op.f("ck_program_transfer_rules_min_positive")),
        sa.CheckConstraint(
            "max_points IS NULL OR max_points >= min_points",
            name=op.f("ck_program_transfer_rules_max_not_below_min"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["programs.id"],
            name=op.f("fk_program_transfer_rules_program_id_programs"),
        ),
        sa.PrimaryKeyConstraint("program_id", name=op.f("pk_program_transfer_rules")),
    )


def downgrade() -> None:
    op.drop_table("program_transfer_rules")
    with op.batch_alter_table("adjustment_steps", schema=None) as batch_op:
        batch_op.drop_index("ix_adjustment_steps_adjustment")
    op.drop_table("adjustment_steps")
    with op.batch_alter_table("adjustments", schema=None) as batch_op:
        batch_op.drop_index("ix_adjustments_program")
    op.drop_table("adjustments")
    with op.batch_alter_table("member_debt_movements", schema=None) as batch_op:
        batch_op.drop_index("ix_member_debt_movements_member")
    op.drop_table("member_debt_movements")
    op.drop_table("member_debts")
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.drop_column("spent_reversal")
