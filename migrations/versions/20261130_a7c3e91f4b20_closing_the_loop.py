"""closing the loop

people.csv's optional `phone` column (a work phone shown to the social worker who must call
back), and the contacts promised with "I hold information" (docs/closing-the-loop.md).

Revision ID: a7c3e91f4b20
Revises: 039cc6627f2b
Create Date: 2026-11-30 02:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import rota.models


# revision identifiers, used by Alembic.
revision: str = 'a7c3e91f4b20'
down_revision: Union[str, Sequence[str], None] = '039cc6627f2b'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('people') as batch:
        batch.add_column(sa.Column('phone', sa.String(length=32), nullable=True))
    op.create_table(
        'contact_followups',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('referral_id', sa.String(length=32), nullable=False),
        sa.Column('target_id', sa.Integer(), nullable=False),
        sa.Column('response_id', sa.Integer(), nullable=False),
        sa.Column('professional_id', sa.String(length=64), nullable=False),
        sa.Column('method', sa.String(length=16), nullable=False),
        sa.Column('contact_by', rota.models.UTCDateTime(), nullable=False),
        sa.Column('referrer_id', sa.String(length=64), nullable=False),
        sa.Column('owner_team', sa.String(length=64), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('answered_by', sa.String(length=64), nullable=True),
        sa.Column('answered_at', rota.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ['referral_id'], ['referrals.referral_id'],
            name=op.f('fk_contact_followups_referral_id_referrals'),
        ),
        sa.ForeignKeyConstraint(
            ['response_id'], ['responses.id'],
            name=op.f('fk_contact_followups_response_id_responses'),
        ),
        sa.ForeignKeyConstraint(
            ['target_id'], ['targets.id'], name=op.f('fk_contact_followups_target_id_targets')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_followups')),
        sa.UniqueConstraint('response_id', name=op.f('uq_contact_followups_response_id')),
    )
    op.create_index(
        op.f('ix_contact_followups_referral_id'), 'contact_followups', ['referral_id'], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_contact_followups_referral_id'), table_name='contact_followups')
    op.drop_table('contact_followups')
    with op.batch_alter_table('people') as batch:
        batch.drop_column('phone')
