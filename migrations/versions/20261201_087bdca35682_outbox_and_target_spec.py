"""outbox and target spec

The table of every message the bot owes is the outbox, not `prompts` (a row may be a card, an
alert or an escalation step); its `channel_id` is the channel-neutral `address`, beside a new
`channel` naming how the row goes, and where a sent message lives is wide enough for any channel
(an email address and a Message-ID, not only Slack's IDs); a target's `target` column is its
`spec`.

SQLite cannot rename constraints or widen a column in place, so there the outbox is created anew
and filled from `prompts`, and `responses` is rebuilt pointing at it; foreign keys are checked at
commit (`defer_foreign_keys`), when every reference is whole again. PostgreSQL renames in place.

Revision ID: 087bdca35682
Revises: cc42eadf25bb
Create Date: 2026-12-01 09:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import rota.models


# revision identifiers, used by Alembic.
revision: str = '087bdca35682'
down_revision: Union[str, Sequence[str], None] = 'cc42eadf25bb'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# The columns both tables share, in order.
SHARED = (
    "id", "referral_id", "target_id", "kind", "recipient_id", "due_at", "state", "attempts",
    "next_attempt_at", "claimed_by", "claimed_until", "sent_at", "message_channel", "message_ts",
    "late", "last_error", "detail",
)


# Where a sent message lives: 32 characters held Slack's IDs, not an email's.
_WIDENED = ("message_channel", "message_ts")


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _rows_table(name: str, *, address: str, wide: bool) -> None:
    """Create the outbox table under `name` with its constraints and indexes (`wide`: as this
    revision has it; else as the one before)."""
    columns = [
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('referral_id', sa.String(length=32), nullable=False),
        sa.Column('target_id', sa.Integer(), nullable=True),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('recipient_id', sa.String(length=64), nullable=True),
    ]
    if wide:
        columns.append(sa.Column('channel', sa.String(length=16), nullable=True))
    columns += [
        sa.Column(address, sa.String(length=254 if wide else 32), nullable=True),
        sa.Column('due_at', rota.models.UTCDateTime(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', rota.models.UTCDateTime(), nullable=True),
        sa.Column('claimed_by', sa.String(length=64), nullable=True),
        sa.Column('claimed_until', rota.models.UTCDateTime(), nullable=True),
        sa.Column('sent_at', rota.models.UTCDateTime(), nullable=True),
        sa.Column('message_channel', sa.String(length=254 if wide else 32), nullable=True),
        sa.Column('message_ts', sa.String(length=255 if wide else 32), nullable=True),
        sa.Column('late', sa.Boolean(), nullable=False),
        sa.Column('last_error', sa.String(length=500), nullable=True),
        sa.Column('detail', sa.Text(), nullable=True),
    ]
    op.create_table(
        name,
        *columns,
        sa.ForeignKeyConstraint(['referral_id'], ['referrals.referral_id'], name=f'fk_{name}_referral_id_referrals'),
        sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=f'fk_{name}_target_id_targets'),
        sa.PrimaryKeyConstraint('id', name=f'pk_{name}'),
    )
    with op.batch_alter_table(name, schema=None) as batch_op:
        batch_op.create_index(f'ix_{name}_referral_id', ['referral_id'], unique=False)
        batch_op.create_index(f'ix_{name}_state_due', ['state', 'due_at'], unique=False)
        batch_op.create_index(f'ix_{name}_target_id', ['target_id'], unique=False)


def _drop_rows_table(name: str) -> None:
    with op.batch_alter_table(name, schema=None) as batch_op:
        batch_op.drop_index(f'ix_{name}_target_id')
        batch_op.drop_index(f'ix_{name}_state_due')
        batch_op.drop_index(f'ix_{name}_referral_id')
    op.drop_table(name)


def _point_responses_at(old: str, new: str) -> None:
    with op.batch_alter_table('responses', schema=None, recreate='always') as batch_op:
        batch_op.drop_constraint(f'fk_responses_prompt_id_{old}', type_='foreignkey')
        batch_op.create_foreign_key(f'fk_responses_prompt_id_{new}', new, ['prompt_id'], ['id'])


def _rename_in_postgresql(old: str, new: str) -> None:
    op.rename_table(old, new)
    op.execute(f'ALTER SEQUENCE {old}_id_seq RENAME TO {new}_id_seq')
    op.execute(f'ALTER TABLE {new} RENAME CONSTRAINT pk_{old} TO pk_{new}')
    for column, referred in (('referral_id', 'referrals'), ('target_id', 'targets')):
        op.execute(
            f'ALTER TABLE {new} RENAME CONSTRAINT fk_{old}_{column}_{referred} '
            f'TO fk_{new}_{column}_{referred}'
        )
    for index in ('referral_id', 'state_due', 'target_id'):
        op.execute(f'ALTER INDEX ix_{old}_{index} RENAME TO ix_{new}_{index}')
    op.execute(
        f'ALTER TABLE responses RENAME CONSTRAINT fk_responses_prompt_id_{old} '
        f'TO fk_responses_prompt_id_{new}'
    )


def upgrade() -> None:
    """Upgrade schema."""
    op.execute('ALTER TABLE targets RENAME COLUMN target TO spec')
    if _is_sqlite():
        op.execute('PRAGMA defer_foreign_keys = ON')
        _rows_table('outbox', address='address', wide=True)
        columns = ", ".join(SHARED)
        op.execute(
            f'INSERT INTO outbox ({columns}, address) SELECT {columns}, channel_id FROM prompts'
        )
        _point_responses_at('prompts', 'outbox')
        _drop_rows_table('prompts')
        return
    _rename_in_postgresql('prompts', 'outbox')
    op.alter_column(
        'outbox', 'channel_id', new_column_name='address',
        existing_type=sa.String(length=32), type_=sa.String(length=254),
    )
    op.add_column('outbox', sa.Column('channel', sa.String(length=16), nullable=True))
    for column, length in (('message_channel', 254), ('message_ts', 255)):
        op.alter_column(
            'outbox', column, existing_type=sa.String(length=32), type_=sa.String(length=length)
        )


def downgrade() -> None:
    """Downgrade schema."""
    op.execute('ALTER TABLE targets RENAME COLUMN spec TO target')
    if _is_sqlite():
        op.execute('PRAGMA defer_foreign_keys = ON')
        _rows_table('prompts', address='channel_id', wide=False)
        columns = ", ".join(c for c in SHARED if c not in _WIDENED)
        cut = ", ".join(f"substr({c}, 1, 32)" for c in _WIDENED)
        op.execute(
            f'INSERT INTO prompts ({columns}, {", ".join(_WIDENED)}, channel_id) '
            f'SELECT {columns}, {cut}, substr(address, 1, 32) FROM outbox'
        )
        _point_responses_at('outbox', 'prompts')
        _drop_rows_table('outbox')
        return
    op.drop_column('outbox', 'channel')
    # Only Slack's IDs fit the old columns (nothing else was stored before this revision).
    for column in ('address', *_WIDENED):
        op.execute(f'UPDATE outbox SET {column} = substr({column}, 1, 32)')
        if column != 'address':
            op.alter_column(
                'outbox', column, existing_type=sa.String(), type_=sa.String(length=32)
            )
    op.alter_column(
        'outbox', 'address', new_column_name='channel_id',
        existing_type=sa.String(length=254), type_=sa.String(length=32),
    )
    _rename_in_postgresql('outbox', 'prompts')
