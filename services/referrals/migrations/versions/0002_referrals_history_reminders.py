"""referrals, their history and reminders (contact columns hold Fernet ciphertext)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 23:38:10.458673
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('referral_reminders',
    sa.Column('reminder_id', sa.Uuid(), nullable=False),
    sa.Column('referral_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.Column('status_event_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('reminder_id', name=op.f('pk_referral_reminders'))
    )
    with op.batch_alter_table('referral_reminders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referral_reminders_referral_id'), ['referral_id'], unique=False)

    op.create_table('referrals',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('meeting_slug', sa.String(length=200), nullable=False),
    sa.Column('fellowship', sa.String(length=64), nullable=False),
    sa.Column('planned_date', sa.Date(), nullable=False),
    sa.Column('support', sa.String(length=32), nullable=False),
    sa.Column('client_reference', sa.String(length=24), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('business_status', sa.String(length=32), nullable=False),
    sa.Column('accompanied', sa.Boolean(), nullable=True),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('mobile', sa.String(length=1024), nullable=True),
    sa.Column('email', sa.String(length=1024), nullable=True),
    sa.Column('reminder_detail', sa.String(length=10), nullable=False),
    sa.Column('consent_to_reminders', sa.Boolean(), nullable=False),
    sa.Column('consent_recorded_by', sa.String(length=200), nullable=True),
    sa.Column('consent_recorded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('consent_wording_version', sa.String(length=20), nullable=True),
    sa.Column('consent_withdrawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('consent_withdrawn_by', sa.String(length=200), nullable=True),
    sa.Column('contact_unreachable_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('contact_unreachable_reason', sa.String(length=200), nullable=True),
    sa.Column('contact_erased_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referrals'))
    )
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referrals_business_status'), ['business_status'], unique=False)
        batch_op.create_index(batch_op.f('ix_referrals_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_referrals_ended_at'), ['ended_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_referrals_meeting_slug'), ['meeting_slug'], unique=False)
        batch_op.create_index(batch_op.f('ix_referrals_planned_date'), ['planned_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_referrals_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_referrals_status'), ['status'], unique=False)

    op.create_table('referral_history',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('referral_id', sa.Uuid(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('by', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('from_status', sa.String(length=20), nullable=True),
    sa.Column('from_stage', sa.String(length=32), nullable=True),
    sa.Column('to_status', sa.String(length=20), nullable=False),
    sa.Column('to_stage', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('accompanied', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], name=op.f('fk_referral_history_referral_id_referrals'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referral_history'))
    )
    with op.batch_alter_table('referral_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referral_history_referral_id'), ['referral_id'], unique=False)




def downgrade() -> None:
    
    with op.batch_alter_table('referral_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_history_referral_id'))

    op.drop_table('referral_history')
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referrals_status'))
        batch_op.drop_index(batch_op.f('ix_referrals_site_id'))
        batch_op.drop_index(batch_op.f('ix_referrals_planned_date'))
        batch_op.drop_index(batch_op.f('ix_referrals_meeting_slug'))
        batch_op.drop_index(batch_op.f('ix_referrals_ended_at'))
        batch_op.drop_index(batch_op.f('ix_referrals_created_at'))
        batch_op.drop_index(batch_op.f('ix_referrals_business_status'))

    op.drop_table('referrals')
    with op.batch_alter_table('referral_reminders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_reminders_referral_id'))

    op.drop_table('referral_reminders')

