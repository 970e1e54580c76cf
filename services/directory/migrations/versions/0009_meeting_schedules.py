"""meeting schedules: RFC 5545 rule, first date and dated exceptions (closures and changes)

Revision ID: 0009_meeting_schedules
Revises: 0008_feed_round_trip
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_meeting_schedules"
down_revision = "0008_feed_round_trip"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rrule", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("dtstart", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("exceptions", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("weekly", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column("last_date", sa.Date(), nullable=True))
        batch_op.create_index("ix_meetings_weekly", ["weekly"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.drop_index("ix_meetings_weekly")
        for column in ("last_date", "weekly", "exceptions", "dtstart", "rrule"):
            batch_op.drop_column(column)
