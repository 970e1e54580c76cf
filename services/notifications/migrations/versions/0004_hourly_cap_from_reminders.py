"""the hourly cap counts reminders' own sent_at: contact_sends is no longer written

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contact_sends") as batch_op:
        batch_op.drop_index("ix_contact_sends_hash_at")
    op.drop_table("contact_sends")


def downgrade() -> None:
    op.create_table(
        "contact_sends",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("contact_hash", sa.String(length=64), nullable=False),
        sa.Column("reminder_id", sa.Uuid(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_sends")),
    )
    with op.batch_alter_table("contact_sends") as batch_op:
        batch_op.create_index("ix_contact_sends_hash_at", ["contact_hash", "sent_at"], unique=False)
    op.execute("INSERT INTO contact_sends (contact_hash, reminder_id, sent_at) "
               "SELECT contact_hash, id, sent_at FROM reminders WHERE sent_at IS NOT NULL")
