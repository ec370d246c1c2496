"""audit log hash chain

Each existing row is chained in id order (bot/services/audit.py computes the hashes, as for new
rows); the head row records the last. The chain head is protected like the log: no DELETE or
TRUNCATE.

Revision ID: 8f5e860e355d
Revises: 9391dffef422
Create Date: 2026-11-29 23:15:55.891753

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import rota.models  # noqa: F401  (custom column types)

from bot.services.audit import GENESIS_HASH, HEAD_ID, row_digest


# revision identifiers, used by Alembic.
revision: str = '8f5e860e355d'
down_revision: Union[str, Sequence[str], None] = '9391dffef422'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

AUDIT_LOG = sa.table(
    "audit_log",
    sa.column("id", sa.Integer()),
    sa.column("at", rota.models.UTCDateTime()),
    sa.column("referral_id", sa.String()),
    sa.column("event", sa.String()),
    sa.column("actor", sa.String()),
    sa.column("recipient", sa.String()),
    sa.column("target", sa.String()),
    sa.column("detail", sa.Text()),
    sa.column("rota_version", sa.Integer()),
    sa.column("prev_id", sa.Integer()),
    sa.column("prev_hash", sa.String()),
    sa.column("row_hash", sa.String()),
)
AUDIT_CHAIN = sa.table(
    "audit_chain",
    sa.column("id", sa.Integer()),
    sa.column("last_id", sa.Integer()),
    sa.column("last_hash", sa.String()),
)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('audit_chain',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last_id', sa.Integer(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain'))
    )
    op.add_column('audit_log', sa.Column('prev_id', sa.Integer(), nullable=True))
    op.add_column('audit_log', sa.Column('prev_hash', sa.String(length=64), nullable=True))
    op.add_column('audit_log', sa.Column('row_hash', sa.String(length=64), nullable=True))

    # The log refuses UPDATE; the owner lifts that for this one rewrite.
    if _postgresql():
        op.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
    else:
        op.execute("DROP TRIGGER audit_log_no_update")
    last_id, last_hash = _chain_existing_rows()
    if _postgresql():
        op.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
        op.alter_column('audit_log', 'prev_hash', nullable=False)
        op.alter_column('audit_log', 'row_hash', nullable=False)
    else:
        # SQLite rebuilds the table to add NOT NULL; its triggers go with the old one.
        op.execute("DROP TRIGGER audit_log_no_delete")
        with op.batch_alter_table('audit_log', schema=None) as batch_op:
            batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=False)
            batch_op.alter_column('row_hash', existing_type=sa.String(length=64), nullable=False)
        _create_sqlite_append_only_triggers("audit_log")
    op.execute(AUDIT_CHAIN.insert().values(id=HEAD_ID, last_id=last_id, last_hash=last_hash))
    _protect_chain_head()


def _chain_existing_rows() -> tuple[int, str]:
    bind = op.get_bind()
    last_id, last_hash = None, GENESIS_HASH
    rows = bind.execute(
        sa.select(
            AUDIT_LOG.c.id, AUDIT_LOG.c.at, AUDIT_LOG.c.referral_id, AUDIT_LOG.c.event,
            AUDIT_LOG.c.actor, AUDIT_LOG.c.recipient, AUDIT_LOG.c.target, AUDIT_LOG.c.detail,
            AUDIT_LOG.c.rota_version,
        ).order_by(AUDIT_LOG.c.id)
    ).all()
    for row in rows:
        fields = dict(row._mapping)
        row_hash = row_digest(prev_id=last_id, prev_hash=last_hash, **fields)
        bind.execute(
            AUDIT_LOG.update()
            .where(AUDIT_LOG.c.id == row.id)
            .values(prev_id=last_id, prev_hash=last_hash, row_hash=row_hash)
        )
        last_id, last_hash = row.id, row_hash
    return last_id or 0, last_hash


def _create_sqlite_append_only_triggers(table: str) -> None:
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )


def _protect_chain_head() -> None:
    """Writers update the head; nobody deletes it (a deleted head would hide a deleted tail)."""
    if _postgresql():
        op.execute(
            """
            CREATE FUNCTION audit_chain_keep() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'audit_chain rows cannot be deleted';
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain "
            "FOR EACH ROW EXECUTE FUNCTION audit_chain_keep()"
        )
        op.execute(
            "CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_keep()"
        )
    else:
        op.execute(
            "CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain "
            "BEGIN SELECT RAISE(ABORT, 'audit_chain rows cannot be deleted'); END"
        )


def downgrade() -> None:
    """Downgrade schema."""
    if _postgresql():
        op.execute("DROP TRIGGER IF EXISTS audit_chain_no_truncate ON audit_chain")
        op.execute("DROP TRIGGER IF EXISTS audit_chain_no_delete ON audit_chain")
        op.execute("DROP FUNCTION IF EXISTS audit_chain_keep()")
        op.drop_column('audit_log', 'row_hash')
        op.drop_column('audit_log', 'prev_hash')
        op.drop_column('audit_log', 'prev_id')
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_chain_no_delete")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        with op.batch_alter_table('audit_log', schema=None) as batch_op:
            batch_op.drop_column('row_hash')
            batch_op.drop_column('prev_hash')
            batch_op.drop_column('prev_id')
        _create_sqlite_append_only_triggers("audit_log")
    op.drop_table('audit_chain')
