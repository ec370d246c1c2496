"""people contact

people.csv's optional `contact` column (`slack`, `email` or `slack+email`): how prompts reach a
person. Existing people keep the default, Slack.

Revision ID: 5e1c0a7d9b21
Revises: 6034045df650
Create Date: 2026-12-15 09:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '5e1c0a7d9b21'
down_revision: Union[str, Sequence[str], None] = '6034045df650'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('people') as batch:
        batch.add_column(
            sa.Column('contact', sa.String(length=16), server_default='slack', nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('people') as batch:
        batch.drop_column('contact')
