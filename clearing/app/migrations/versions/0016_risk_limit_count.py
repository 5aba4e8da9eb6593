"""risk_limit_count: a limit's counters and its rolling windows in one round trip

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 13:15:00

A rolling window is summed after its counter rows are upserted (and so locked), and the sum must
see what a transaction that held those rows committed meanwhile: a second statement, with a
snapshot of its own. In a VOLATILE PL/pgSQL function each statement takes a fresh snapshot, so
the two run in one call: one round trip per screened operation instead of two.
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION risk_limit_count(
    p_keys text[], p_buckets bigint[], p_counts bigint[], p_points bigint[], p_amounts bigint[],
    p_window_keys text[], p_window_starts bigint[]
) RETURNS TABLE (key text, bucket bigint, count bigint, points bigint, amount bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    -- The rows in key order: two operations of one key never lock crosswise.
    RETURN QUERY
    INSERT INTO risk_limit_counters AS c (key, bucket, count, points, amount)
    SELECT * FROM unnest(p_keys, p_buckets, p_counts, p_points, p_amounts)
        AS u(key, bucket, count, points, amount)
    ORDER BY 1, 2
    ON CONFLICT (key, bucket) DO UPDATE SET count = c.count + excluded.count,
        points = c.points + excluded.points, amount = c.amount + excluded.amount
    RETURNING c.key::text, c.bucket, c.count, c.points, c.amount;
    -- A fresh snapshot: the windows see every count committed before the rows were locked.
    RETURN QUERY
    SELECT w.key, -1::bigint, coalesce(sum(c.count), 0)::bigint,
        coalesce(sum(c.points), 0)::bigint, coalesce(sum(c.amount), 0)::bigint
    FROM unnest(p_window_keys, p_window_starts) AS w(key, start)
    LEFT JOIN risk_limit_counters c ON c.key = w.key AND c.bucket >= w.start
    GROUP BY w.key;
END
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION risk_limit_count(text[], bigint[], bigint[], bigint[], bigint[], text[], bigint[])"
        )
