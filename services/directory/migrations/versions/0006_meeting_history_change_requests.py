"""meeting history (who changed what) and change requests ("report a problem with this meeting")

Revision ID: 0006_history_requests
Revises: 0005_feed_sources
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_history_requests"
down_revision = "0005_feed_sources"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meeting_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("fields", sa.String(length=1000), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meeting_changes")),
    )
    with op.batch_alter_table("meeting_changes") as batch_op:
        batch_op.create_index(batch_op.f("ix_meeting_changes_slug"), ["slug"], unique=False)
    op.create_table(
        "change_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("meeting_slug", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("reported_by", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_requests")),
    )
    with op.batch_alter_table("change_requests") as batch_op:
        batch_op.create_index(batch_op.f("ix_change_requests_meeting_slug"), ["meeting_slug"], unique=False)
        batch_op.create_index(batch_op.f("ix_change_requests_status"), ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("change_requests")
    op.drop_table("meeting_changes")
