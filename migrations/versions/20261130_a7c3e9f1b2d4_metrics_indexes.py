"""metrics indexes

GET /metrics counts the outbox's settled rows by kind, channel and outcome, with their
lateness, and the audit log's events by name: both from an index alone (docs/operations.md).
A sent row keeps how late it went (`lateness_ms`, sent_at - due_at), so a scrape compares
integers rather than parsing two times a row; rows sent before this revision get theirs here.

Revision ID: a7c3e9f1b2d4
Revises: de33a134eae9
Create Date: 2026-11-30 00:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = 'a7c3e9f1b2d4'
down_revision: Union[str, Sequence[str], None] = 'de33a134eae9'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('outbox', sa.Column('lateness_ms', sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == 'postgresql':
        late_by = "round(extract(epoch from sent_at - due_at) * 1000)"
    else:
        late_by = "CAST(round((julianday(sent_at) - julianday(due_at)) * 86400000) AS INTEGER)"
    op.execute(
        f"UPDATE outbox SET lateness_ms = {late_by} WHERE state = 'sent' AND sent_at IS NOT NULL"
    )
    op.create_index(
        'ix_outbox_metrics',
        'outbox',
        ['state', 'kind', 'channel', 'late', 'lateness_ms'],
        unique=False,
    )
    op.create_index('ix_audit_log_event', 'audit_log', ['event'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_audit_log_event', table_name='audit_log')
    op.drop_index('ix_outbox_metrics', table_name='outbox')
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('lateness_ms')
