"""postcodes: the ONS Postcode Directory, when a deployment loads it

Revision ID: 0007_postcodes
Revises: 0006_history_requests
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_postcodes"
down_revision = "0006_history_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "postcodes",
        sa.Column("postcode", sa.String(length=8), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("postcode", name=op.f("pk_postcodes")),
    )


def downgrade() -> None:
    op.drop_table("postcodes")
