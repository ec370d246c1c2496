"""shift role index covers holders

The planner asks "who holds this role at t" and "who starts holding it next": with end_at and
person_id in ix_shifts_role_start both are answered from the index alone.

Revision ID: de33a134eae9
Revises: 5e1c0a7d9b21
Create Date: 2026-11-27 00:00:00

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = 'de33a134eae9'
down_revision: Union[str, Sequence[str], None] = '5e1c0a7d9b21'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Plain index operations: SQLite does them in place, without copying the table.
    op.drop_index('ix_shifts_role_start', table_name='shifts')
    op.create_index(
        'ix_shifts_role_start', 'shifts', ['role', 'start_at', 'end_at', 'person_id'], unique=False
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_shifts_role_start', table_name='shifts')
    op.create_index('ix_shifts_role_start', 'shifts', ['role', 'start_at'], unique=False)
