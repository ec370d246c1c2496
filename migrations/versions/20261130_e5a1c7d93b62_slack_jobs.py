"""slack jobs

The work a click starts after its ack, kept in the database until a dispatcher has done it
(bot/slackjobs/, docs/operations.md "Slack jobs"); the request's signature is unique, so a
replayed click adds no second job.

Revision ID: e5a1c7d93b62
Revises: c3d8e2a41f07
Create Date: 2026-11-30 09:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import rota.models  # noqa: F401  (custom column types)


# revision identifiers, used by Alembic.
revision: str = 'e5a1c7d93b62'
down_revision: Union[str, Sequence[str], None] = 'c3d8e2a41f07'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('slack_jobs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('signature', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', rota.models.UTCDateTime(), nullable=False),
    sa.Column('ready_at', rota.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', rota.models.UTCDateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claimed_until', rota.models.UTCDateTime(), nullable=True),
    sa.Column('finished_at', rota.models.UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.String(length=120), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_slack_jobs')),
    sa.UniqueConstraint('signature', name=op.f('uq_slack_jobs_signature'))
    )
    with op.batch_alter_table('slack_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_slack_jobs_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index('ix_slack_jobs_state_ready', ['state', 'ready_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('slack_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_slack_jobs_state_ready')
        batch_op.drop_index(batch_op.f('ix_slack_jobs_expires_at'))

    op.drop_table('slack_jobs')
