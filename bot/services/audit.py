"""The single writer of the append-only audit log and its hash chain (docs/security.md).

Each row carries `prev_id` and `prev_hash` (the row before it) and `row_hash`, the SHA-256 of a
canonical serialisation of its own fields and `prev_hash`. Writers take the one chain-head row
(`audit_chain`) for update, so concurrent writers on PostgreSQL chain in one order (SQLite's
writers are already serialised by BEGIN IMMEDIATE, bot/db.py); the head is held until the
writer's transaction ends, so record events late in long transactions. New rows get the next
id after the head, so ids run without gaps and a missing row is named by the row after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import AUDIT_EVENTS, AuditChainHead, AuditEvent

GENESIS_HASH = "0" * 64
CHAIN_FORMAT = 1  # bump if the canonical serialisation ever changes
HEAD_ID = 1
_HEAD_KEY = "audit_chain_head"  # in Session.info: (transaction, locked head)


class ChainHeadMissing(RuntimeError):
    """The audit log has rows but its chain head is gone: someone deleted it."""


def row_digest(
    *,
    id: int,
    prev_id: int | None,
    prev_hash: str,
    at: datetime,
    referral_id: str | None,
    event: str,
    actor: str | None,
    recipient: str | None,
    target: str | None,
    detail: str | None,
    rota_version: int | None,
) -> str:
    """SHA-256 (hex) of a row's canonical serialisation: its fields in a fixed order, as JSON."""
    fields = [
        CHAIN_FORMAT,
        id,
        prev_id,
        prev_hash,
        at.astimezone(UTC).isoformat(timespec="microseconds"),
        referral_id,
        event,
        actor,
        recipient,
        target,
        detail,
        rota_version,
    ]
    canonical = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def digest_of(row: AuditEvent) -> str:
    """The hash `row` should carry, recomputed from its stored fields."""
    return row_digest(
        id=row.id,
        prev_id=row.prev_id,
        prev_hash=row.prev_hash,
        at=row.at,
        referral_id=row.referral_id,
        event=row.event,
        actor=row.actor,
        recipient=row.recipient,
        target=row.target,
        detail=row.detail,
        rota_version=row.rota_version,
    )


def record(
    session: Session,
    event: str,
    *,
    at: datetime,
    referral_id: str | None = None,
    actor: str | None = None,
    recipient: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | str | None = None,
    rota_version: int | None = None,
) -> AuditEvent:
    """Append one event to the audit log in `session`'s transaction and return it."""
    if event not in AUDIT_EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    if at.tzinfo is None:
        raise ValueError("audit events need an aware time")
    if isinstance(detail, dict):
        detail = json.dumps(detail, ensure_ascii=False)
    head = _lock_head(session)
    row = AuditEvent(
        id=head.last_id + 1,
        prev_id=head.last_id or None,
        prev_hash=head.last_hash,
        at=at,
        referral_id=referral_id,
        event=event,
        actor=actor,
        recipient=recipient,
        target=target,
        detail=detail,
        rota_version=rota_version,
    )
    row.row_hash = digest_of(row)
    head.last_id, head.last_hash = row.id, row.row_hash
    session.add(row)
    return row


def _lock_head(session: Session) -> AuditChainHead:
    """The chain head, locked until the transaction ends; created for an empty log.

    Locked once per transaction: later events in the same transaction reuse it (re-selecting
    would flush every pending row each time, which grows with the transaction). A lock taken
    inside a savepoint is not reused, since rolling the savepoint back releases it.
    """
    transaction = session.get_transaction()
    cached = session.info.get(_HEAD_KEY)
    if cached is not None and cached[0] is transaction and cached[1] in session:
        return cached[1]
    head = _select_head(session)
    if transaction is not None and not session.in_nested_transaction():
        session.info[_HEAD_KEY] = (transaction, head)
    return head


def _select_head(session: Session) -> AuditChainHead:
    query = select(AuditChainHead).where(AuditChainHead.id == HEAD_ID).with_for_update()
    head = session.scalars(query).one_or_none()
    if head is not None:
        return head
    if session.scalar(select(func.max(AuditEvent.id))) is not None:
        # The first writer of an empty log may have committed its head and first event between
        # our two statements: look again before calling the head missing.
        head = session.scalars(query.execution_options(populate_existing=True)).one_or_none()
        if head is not None:
            return head
        raise ChainHeadMissing(
            "the audit log's chain head (table audit_chain) is missing: the log may have been "
            "tampered with; run `handover log verify`"
        )
    try:
        with session.begin_nested():
            session.add(AuditChainHead(id=HEAD_ID, last_id=0, last_hash=GENESIS_HASH))
    except IntegrityError:
        pass  # another writer created it first
    return session.scalars(query.execution_options(populate_existing=True)).one()


# ----- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainCheck:
    """What `verify_chain` found: the rows checked, and the first break (None when intact)."""

    rows: int
    last_id: int | None
    last_hash: str
    problem: str | None = None
    broken_row: int | None = None

    @property
    def intact(self) -> bool:
        """Whether the chain held from the first row to the head."""
        return self.problem is None


def verify_chain(session: Session, *, batch: int = 1000) -> ChainCheck:
    """Walk the log in id order, checking every row's hash and link, then the head."""
    rows = 0
    last_id: int | None = None
    last_hash = GENESIS_HASH

    def broken(row_id: int, problem: str) -> ChainCheck:
        return ChainCheck(rows, last_id, last_hash, problem, row_id)

    for row in _rows_in_order(session, batch):
        if digest_of(row) != row.row_hash:
            return broken(row.id, f"row {row.id} is altered: its contents do not match its hash")
        if row.prev_id != last_id:
            if row.prev_id is not None and (last_id is None or row.prev_id > last_id):
                before = f"row {last_id}" if last_id is not None else "no row"
                return broken(
                    row.prev_id,
                    f"row {row.prev_id} is missing: row {row.id} names it as the row before, "
                    f"and the last row found before it is {before}",
                )
            return broken(
                row.id,
                f"row {row.id} is altered: it names row {row.prev_id} as the row before, "
                f"not row {last_id}",
            )
        if row.prev_hash != last_hash:
            if last_id is None:
                return broken(row.id, f"row {row.id} is altered: the first row follows no hash")
            return broken(
                last_id, f"row {last_id} is altered: its hash is not the one row {row.id} recorded"
            )
        rows += 1
        last_id, last_hash = row.id, row.row_hash
    head = session.get(AuditChainHead, HEAD_ID)
    if head is None:
        if last_id is None:
            return ChainCheck(0, None, GENESIS_HASH)
        return broken(last_id, "the chain head (table audit_chain) is missing")
    if head.last_id != (last_id or 0):
        if last_id is None or head.last_id > last_id:
            first_missing = (last_id or 0) + 1
            return broken(
                first_missing,
                f"row {first_missing} is missing: the chain's head names row {head.last_id} "
                f"as the last, and the last row found is {last_id or 'none'}",
            )
        return broken(last_id, f"the chain head names row {head.last_id}, not row {last_id}")
    if head.last_hash != last_hash:
        return broken(last_id, f"row {last_id} is altered: its hash is not the chain head's")
    return ChainCheck(rows, last_id, last_hash)


def _rows_in_order(session: Session, batch: int) -> Iterator[AuditEvent]:
    after = None
    while True:
        query = select(AuditEvent).order_by(AuditEvent.id).limit(batch)
        if after is not None:
            query = query.where(AuditEvent.id > after)
        chunk = session.scalars(query).all()
        if not chunk:
            return
        yield from chunk
        after = chunk[-1].id
        session.expunge_all()
