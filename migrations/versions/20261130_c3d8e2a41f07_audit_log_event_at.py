"""audit log event and time

An index on the audit log's (event, at): `handover report` reads the referrals received in its
window (`referral_received` rows between two instants) through it, rather than every such row of
the whole log (bot/services/log_targets.py).

Revision ID: c3d8e2a41f07
Revises: b7c41e2f9a13
Create Date: 2026-11-30 06:15:00

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = 'c3d8e2a41f07'
down_revision: Union[str, Sequence[str], None] = 'b7c41e2f9a13'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index('ix_audit_log_event_at', 'audit_log', ['event', 'at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_audit_log_event_at', table_name='audit_log')
