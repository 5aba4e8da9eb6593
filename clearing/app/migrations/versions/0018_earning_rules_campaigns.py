"""programs: earning rules (versioned books), campaigns with budgets, earning counters

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clearing.core.db import ExactDecimal

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def upgrade() -> None:
    op.create_table(
        "earning_books",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("min_spend", sa.BigInteger(), nullable=True),
        sa.Column("day_cap", sa.BigInteger(), nullable=True),
        sa.Column("month_cap", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("earning_books", "program_id", "programs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_earning_books")),
        sa.UniqueConstraint("program_id", "version", name="uq_earning_books_version"),
    )
    op.create_table(
        "earning_rules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("book_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("rate", ExactDecimal(18, 6), nullable=True),
        sa.Column("product_line", sa.String(length=40), nullable=True),
        sa.Column("merchant_category", sa.String(length=40), nullable=True),
        sa.Column("merchant_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.String(length=40), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=True),
        sa.Column("frequency", sa.String(length=8), nullable=True),
        sa.Column("max_per_period", sa.Integer(), nullable=True),
        sa.Column("streak_days", sa.Integer(), nullable=True),
        sa.Column("streak_points", sa.BigInteger(), nullable=True),
        sa.Column("referee_points", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('spend', 'behaviour')", name=op.f("ck_earning_rules_kind_known")
        ),
        _fk("earning_rules", "book_id", "earning_books"),
        _fk("earning_rules", "merchant_id", "organisations"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_earning_rules")),
        sa.UniqueConstraint("book_id", "position", name="uq_earning_rules_position"),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("days_of_month", sa.JSON(), nullable=False),
        sa.Column("weekdays", sa.JSON(), nullable=False),
        sa.Column("multiplier", ExactDecimal(12, 6), nullable=True),
        sa.Column("bonus_points", sa.BigInteger(), nullable=True),
        sa.Column("min_spend", sa.BigInteger(), nullable=True),
        sa.Column("tiers", sa.JSON(), nullable=False),
        sa.Column("min_member_days", sa.Integer(), nullable=True),
        sa.Column("max_member_days", sa.Integer(), nullable=True),
        sa.Column("budget", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('multiplier', 'first_purchase', 'spend_bonus')",
            name=op.f("ck_campaigns_kind_known"),
        ),
        _fk("campaigns", "program_id", "programs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("program_id", "code", name="uq_campaigns_code"),
    )
    op.create_table(
        "campaign_budgets",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("budget", sa.BigInteger(), nullable=False),
        sa.Column("paid", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "paid >= 0 AND paid <= budget", name=op.f("ck_campaign_budgets_within_budget")
        ),
        _fk("campaign_budgets", "campaign_id", "campaigns"),
        sa.PrimaryKeyConstraint("campaign_id", "slot", name=op.f("pk_campaign_budgets")),
    )
    op.create_table(
        "campaign_awards",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("campaign_awards", "campaign_id", "campaigns"),
        _fk("campaign_awards", "event_id", "program_events"),
        _fk("campaign_awards", "member_id", "members"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_awards")),
    )
    with op.batch_alter_table("campaign_awards", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_awards_campaign", ["campaign_id", "member_id"])
    op.create_table(
        "earning_counters",
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=True),
        _fk("earning_counters", "member_id", "members"),
        sa.PrimaryKeyConstraint("member_id", "key", name=op.f("pk_earning_counters")),
    )


def downgrade() -> None:
    op.drop_table("earning_counters")
    with op.batch_alter_table("campaign_awards", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_awards_campaign")
    op.drop_table("campaign_awards")
    op.drop_table("campaign_budgets")
    op.drop_table("campaigns")
    op.drop_table("earning_rules")
    op.drop_table("earning_books")
