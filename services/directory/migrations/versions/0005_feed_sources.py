"""feed sources re-imported on a schedule, and their import runs (held when a feed loses most meetings)

Revision ID: 0005_feed_sources
Revises: 0004_engagement
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_feed_sources"
down_revision = "0004_engagement"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_sources",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("fellowship", sa.String(length=64), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("every_hours", sa.Float(), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_sources")),
    )
    with op.batch_alter_table("feed_sources") as batch_op:
        batch_op.create_index(batch_op.f("ix_feed_sources_next_run_at"), ["next_run_at"], unique=False)
    op.create_table(
        "import_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source_id", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("live_before", sa.Integer(), nullable=False),
        sa.Column("held_rows", sa.JSON(), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_runs")),
    )
    with op.batch_alter_table("import_runs") as batch_op:
        batch_op.create_index(batch_op.f("ix_import_runs_source_id"), ["source_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_import_runs_status"), ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("import_runs")
    op.drop_table("feed_sources")
