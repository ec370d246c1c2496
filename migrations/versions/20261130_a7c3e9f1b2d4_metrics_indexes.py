"""metrics indexes

GET /metrics counts the outbox's settled rows by kind, channel and outcome, with their
lateness, and the audit log's events by name: both from an index alone (docs/operations.md).

Revision ID: a7c3e9f1b2d4
Revises: de33a134eae9
Create Date: 2026-11-30 00:00:00

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = 'a7c3e9f1b2d4'
down_revision: Union[str, Sequence[str], None] = 'de33a134eae9'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(
        'ix_outbox_metrics',
        'outbox',
        ['state', 'kind', 'channel', 'late', 'due_at', 'sent_at'],
        unique=False,
    )
    op.create_index('ix_audit_log_event', 'audit_log', ['event'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_audit_log_event', table_name='audit_log')
    op.drop_index('ix_outbox_metrics', table_name='outbox')
