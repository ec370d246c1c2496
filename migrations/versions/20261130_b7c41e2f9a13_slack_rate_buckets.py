"""slack rate buckets

A token bucket per workspace token and Slack rate tier, shared by every dispatcher through the
database (bot/delivery/pacing.py).

Revision ID: b7c41e2f9a13
Revises: a7c3e91f4b20
Create Date: 2026-11-30 00:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = 'b7c41e2f9a13'
down_revision: Union[str, Sequence[str], None] = 'a7c3e91f4b20'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'slack_rate_buckets',
        sa.Column('bucket', sa.String(length=80), nullable=False),
        sa.Column('tokens', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.Column('blocked_until', sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint('bucket', name=op.f('pk_slack_rate_buckets')),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('slack_rate_buckets')
