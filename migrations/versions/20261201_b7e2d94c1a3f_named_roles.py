"""named roles

Every role some shift has named, kept when the shifts naming it are replaced by a new
shifts.csv: a role no shift has ever named is unknown input, a known role with nobody on shift
is unroutable (docs/reference/http.md). Filled from the shifts stored now.

Revision ID: b7e2d94c1a3f
Revises: 5d2f8a61c0e4
Create Date: 2026-12-01 01:05:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = 'b7e2d94c1a3f'
down_revision: Union[str, Sequence[str], None] = '5d2f8a61c0e4'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'named_roles',
        sa.Column('role', sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint('role', name=op.f('pk_named_roles')),
    )
    op.execute('INSERT INTO named_roles (role) SELECT DISTINCT role FROM shifts')


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('named_roles')
