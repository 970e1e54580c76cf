"""outbox: when each subscriber confirmed it processed the event

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_outbox_unconfirmed", ["confirmed_at", "relayed_at"], unique=False)
    # Events relayed before receipts existed count as confirmed.
    op.execute("UPDATE outbox SET confirmed_at = relayed_at WHERE relayed_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_index("ix_outbox_unconfirmed")
        batch_op.drop_column("confirmed_at")
