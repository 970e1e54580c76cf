"""feed round trip: the Meeting Guide fields a feed carries that meetings did not keep

regions, sub_sub_region, the feed's own ``approximate`` and ``updated``, the multi-day row's slug,
edit_url, homegroup_online, feedback_emails, the service entity's fields and the contact fields
(encrypted at rest, like the facilitator's).

Revision ID: 0008_feed_round_trip
Revises: 0007_postcodes
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_feed_round_trip"
down_revision = "0007_postcodes"
branch_labels = None
depends_on = None

CONTACTS = [f"contact_{n}_{part}" for n in (1, 2, 3) for part in ("name", "email", "phone")]


def upgrade() -> None:
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("regions", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("sub_sub_region", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("address_approximate", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("listing_updated", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("feed_slug", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("edit_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("homegroup_online", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("feedback_emails", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("entity", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("entity_email", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("entity_location", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("entity_logo", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("entity_phone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("entity_url", sa.Text(), nullable=True))
        for name in CONTACTS:
            batch_op.add_column(sa.Column(name, sa.String(length=1024), nullable=True))
    # Meetings imported before kept the feed's ``approximate`` in ``approximate``: the export says what it said then
    # until the next import states it again.
    op.execute("UPDATE meetings SET address_approximate = approximate WHERE source IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        for name in reversed(CONTACTS):
            batch_op.drop_column(name)
        for name in ("entity_url", "entity_phone", "entity_logo", "entity_location", "entity_email", "entity",
                     "feedback_emails", "homegroup_online", "edit_url", "feed_slug", "listing_updated",
                     "address_approximate", "sub_sub_region", "regions"):
            batch_op.drop_column(name)
