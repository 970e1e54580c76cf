"""client replies: texts back from clients, encrypted, unread until seen; YES/NO as attendance reports

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "client_replies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("referral_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.String(length=12000), nullable=True),
        sa.Column("attendance", sa.String(length=16), nullable=True),
        sa.Column("report_state", sa.String(length=16), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seen_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["referral_id"], ["referrals.id"], name=op.f("fk_client_replies_referral_id_referrals"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_replies")),
    )
    with op.batch_alter_table("client_replies") as batch_op:
        for column in ("referral_id", "received_at", "report_state", "seen_at"):
            batch_op.create_index(batch_op.f(f"ix_client_replies_{column}"), [column], unique=False)


def downgrade() -> None:
    op.drop_table("client_replies")
