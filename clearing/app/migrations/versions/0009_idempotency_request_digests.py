"""idempotency records keep a digest per request field, so a conflict names what differs

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-30 09:00:00

Digests, not the request: a checkout's request carries the member's payment token, which is
never stored. Records written before this revision have none; their conflicts say "request".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_digests", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.drop_column("request_digests")
