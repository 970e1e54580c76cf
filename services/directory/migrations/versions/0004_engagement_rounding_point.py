"""engagement counts: a secret rounding point per counter (disclosure control)

Revision ID: 0004_engagement
Revises: 0003
"""
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004_engagement"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("engagement_counts") as batch_op:
        batch_op.add_column(sa.Column("rounding_point", sa.SmallInteger(), nullable=True))
    # Existing counters get their own random draw, as new ones do (engagement.count_facts).
    conn = op.get_bind()
    counts = sa.table("engagement_counts", sa.column("site_id"), sa.column("fellowship"), sa.column("week_start"),
                      sa.column("metric"), sa.column("rounding_point"))
    keys = conn.execute(sa.select(counts.c.site_id, counts.c.fellowship, counts.c.week_start, counts.c.metric)).all()
    for site_id, fellowship, week_start, metric in keys:
        conn.execute(counts.update().where(counts.c.site_id == site_id, counts.c.fellowship == fellowship,
                                           counts.c.week_start == week_start, counts.c.metric == metric)
                     .values(rounding_point=secrets.randbelow(5)))
    with op.batch_alter_table("engagement_counts") as batch_op:
        batch_op.alter_column("rounding_point", existing_type=sa.SmallInteger(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("engagement_counts") as batch_op:
        batch_op.drop_column("rounding_point")
