"""outbox state and lease index

A row cancelled while a dispatcher held it keeps its holder's lease until it is settled; when
the lease ends, a dispatcher looks for its message in the channel (`outbox.claim_unsettled`,
docs/timing.md "Cancelled in a batch"). That search, the abandoned claims and the next lease's
end are read from (state, claimed_until).

Revision ID: 5d2f8a61c0e4
Revises: e5a1c7d93b62
Create Date: 2026-11-30 10:10:00

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '5d2f8a61c0e4'
down_revision: Union[str, Sequence[str], None] = 'e5a1c7d93b62'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(
        'ix_outbox_state_lease', 'outbox', ['state', 'claimed_until'], unique=False
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_outbox_state_lease', table_name='outbox')
