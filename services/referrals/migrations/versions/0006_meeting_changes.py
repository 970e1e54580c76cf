"""meeting changes: what changed in a referral's meeting while it was open, for the keyworker

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.add_column(sa.Column("meeting_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("meeting_change", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("meeting_change_seen_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referrals") as batch_op:
        batch_op.drop_column("meeting_change_seen_at")
        batch_op.drop_column("meeting_change")
        batch_op.drop_column("meeting_changed_at")
