"""points_mall: mall items, offers, prices, stock slots, member limits, orders, vouchers;
agreements to supply the mall at a wholesale rate

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-30 17:29:47.263648
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import clearing.core.db  # custom column types (ExactDecimal)

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mall_items",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_org_id", sa.Uuid(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("fulfilment", sa.String(length=12), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("value_amount", sa.BigInteger(), nullable=False),
        sa.Column("stock_limited", sa.Boolean(), nullable=False),
        sa.Column("sale_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sale_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("member_limit", sa.Integer(), nullable=True),
        sa.Column("limit_period", sa.String(length=8), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "fulfilment IN ('delivery', 'voucher')", name=op.f("ck_mall_items_fulfilment_known")
        ),
        sa.CheckConstraint(
            "limit_period IS NULL OR limit_period IN ('day', 'month', 'year', 'ever')",
            name=op.f("ck_mall_items_limit_period_known"),
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'on_sale', 'withdrawn')", name=op.f("ck_mall_items_status_known")
        ),
        sa.CheckConstraint(
            "(member_limit IS NULL AND limit_period IS NULL) OR (member_limit > 0 AND limit_period IS NOT NULL)",
            name=op.f("ck_mall_items_member_limit_has_period"),
        ),
        sa.CheckConstraint("value_amount >= 0", name=op.f("ck_mall_items_value_not_negative")),
        sa.ForeignKeyConstraint(
            ["owner_org_id"],
            ["organisations.id"],
            name=op.f("fk_mall_items_owner_org_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mall_items")),
        sa.UniqueConstraint("owner_org_id", "sku", name=op.f("uq_mall_items_owner_org_id")),
    )
    with op.batch_alter_table("mall_items", schema=None) as batch_op:
        batch_op.create_index("ix_mall_items_owner", ["owner_org_id", "id"], unique=False)

    op.create_table(
        "mall_stock",
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("remaining >= 0", name=op.f("ck_mall_stock_remaining_not_negative")),
        sa.ForeignKeyConstraint(
            ["item_id"], ["mall_items.id"], name=op.f("fk_mall_stock_item_id_mall_items")
        ),
        sa.PrimaryKeyConstraint("item_id", "slot", name=op.f("pk_mall_stock")),
    )
    op.create_table(
        "mall_limit_uses",
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("taken", sa.Integer(), nullable=False),
        sa.CheckConstraint("taken >= 0", name=op.f("ck_mall_limit_uses_taken_not_negative")),
        sa.ForeignKeyConstraint(
            ["item_id"], ["mall_items.id"], name=op.f("fk_mall_limit_uses_item_id_mall_items")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_mall_limit_uses_member_id_members")
        ),
        sa.PrimaryKeyConstraint("item_id", "member_id", "period", name=op.f("pk_mall_limit_uses")),
    )
    op.create_table(
        "mall_offers",
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("listed", sa.Boolean(), nullable=False),
        sa.Column("min_tier_id", sa.Uuid(), nullable=True),
        sa.Column("min_balance", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "min_balance >= 0", name=op.f("ck_mall_offers_min_balance_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["mall_items.id"], name=op.f("fk_mall_offers_item_id_mall_items")
        ),
        sa.ForeignKeyConstraint(
            ["min_tier_id"],
            ["program_tiers.id"],
            name=op.f("fk_mall_offers_min_tier_id_program_tiers"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_mall_offers_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("item_id", "program_id", name=op.f("pk_mall_offers")),
    )
    with op.batch_alter_table("mall_offers", schema=None) as batch_op:
        batch_op.create_index("ix_mall_offers_program", ["program_id", "item_id"], unique=False)

    op.create_table(
        "mall_orders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("issuer_org_id", sa.Uuid(), nullable=False),
        sa.Column("owner_org_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price_version", sa.Integer(), nullable=False),
        sa.Column("unit_points", sa.BigInteger(), nullable=False),
        sa.Column("unit_cash", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("cash_amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "wholesale_rate", clearing.core.db.ExactDecimal(precision=12, scale=8), nullable=True
        ),
        sa.Column("wholesale_unit", sa.BigInteger(), nullable=False),
        sa.Column("wholesale_amount", sa.BigInteger(), nullable=False),
        sa.Column("agreement_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("limit_period", sa.String(length=10), nullable=True),
        sa.Column("redemption_entry_id", sa.Uuid(), nullable=False),
        sa.Column("returned_quantity", sa.Integer(), nullable=False),
        sa.Column("returned_points", sa.BigInteger(), nullable=False),
        sa.Column("returned_cash", sa.BigInteger(), nullable=False),
        sa.Column("returned_wholesale", sa.BigInteger(), nullable=False),
        sa.Column("delivery_reference", sa.String(length=200), nullable=True),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('placed', 'fulfilled', 'cancelled', 'returned')",
            name=op.f("ck_mall_orders_status_known"),
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_mall_orders_quantity_positive")),
        sa.CheckConstraint(
            "returned_quantity >= 0 AND returned_quantity <= quantity",
            name=op.f("ck_mall_orders_returned_within"),
        ),
        sa.ForeignKeyConstraint(
            ["issuer_org_id"],
            ["organisations.id"],
            name=op.f("fk_mall_orders_issuer_org_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["mall_items.id"], name=op.f("fk_mall_orders_item_id_mall_items")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_mall_orders_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["owner_org_id"],
            ["organisations.id"],
            name=op.f("fk_mall_orders_owner_org_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_mall_orders_program_id_programs")
        ),
        sa.ForeignKeyConstraint(
            ["redemption_entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_mall_orders_redemption_entry_id_journal_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mall_orders")),
    )
    with op.batch_alter_table("mall_orders", schema=None) as batch_op:
        batch_op.create_index("ix_mall_orders_member", ["member_id", "created_at"], unique=False)
        batch_op.create_index(
            "ix_mall_orders_owner", ["owner_org_id", "status", "created_at"], unique=False
        )
        batch_op.create_index("ix_mall_orders_program", ["program_id", "created_at"], unique=False)

    op.create_table(
        "mall_prices",
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("cash_amount", sa.BigInteger(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("cash_amount >= 0", name=op.f("ck_mall_prices_cash_not_negative")),
        sa.CheckConstraint("points > 0", name=op.f("ck_mall_prices_points_positive")),
        sa.ForeignKeyConstraint(
            ["item_id", "program_id"],
            ["mall_offers.item_id", "mall_offers.program_id"],
            name=op.f("fk_mall_prices_item_id_mall_offers"),
        ),
        sa.PrimaryKeyConstraint("item_id", "program_id", "version", name=op.f("pk_mall_prices")),
    )
    op.create_table(
        "mall_vouchers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("owner_org_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=24), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_key", sa.String(length=200), nullable=True),
        sa.CheckConstraint(
            "status IN ('issued', 'redeemed', 'void')", name=op.f("ck_mall_vouchers_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["mall_orders.id"], name=op.f("fk_mall_vouchers_order_id_mall_orders")
        ),
        sa.ForeignKeyConstraint(
            ["owner_org_id"],
            ["organisations.id"],
            name=op.f("fk_mall_vouchers_owner_org_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mall_vouchers")),
        sa.UniqueConstraint("code", name=op.f("uq_mall_vouchers_code")),
    )
    with op.batch_alter_table("mall_vouchers", schema=None) as batch_op:
        batch_op.create_index("ix_mall_vouchers_order", ["order_id"], unique=False)

    with op.batch_alter_table("merchant_agreements", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("supply", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "wholesale_rate",
                clearing.core.db.ExactDecimal(precision=12, scale=8),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("merchant_agreements", schema=None) as batch_op:
        batch_op.drop_column("wholesale_rate")
        batch_op.drop_column("supply")

    with op.batch_alter_table("mall_vouchers", schema=None) as batch_op:
        batch_op.drop_index("ix_mall_vouchers_order")

    op.drop_table("mall_vouchers")
    op.drop_table("mall_prices")
    with op.batch_alter_table("mall_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_mall_orders_program")
        batch_op.drop_index("ix_mall_orders_owner")
        batch_op.drop_index("ix_mall_orders_member")

    op.drop_table("mall_orders")
    with op.batch_alter_table("mall_offers", schema=None) as batch_op:
        batch_op.drop_index("ix_mall_offers_program")

    op.drop_table("mall_offers")
    op.drop_table("mall_limit_uses")
    op.drop_table("mall_stock")
    with op.batch_alter_table("mall_items", schema=None) as batch_op:
        batch_op.drop_index("ix_mall_items_owner")

    op.drop_table("mall_items")
