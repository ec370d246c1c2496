"""What delivering a batch of rows reads once rather than once a row (docs/benchmarks.md).

Composing and confirming a claimed batch each run in one transaction. Within it, every row
kind's code reads the rota through one `RotaStore` (`store_of`), so a person, a team, a
closure or the rota version is read once a batch; `preload` reads the batch's referrals and
targets in one statement each (kept here, so the session's identity map answers `get` without
SQL), and resolves every prompt's recipient from one reading of the rota (`recipient_at`).
Only reads are shared: each row is still decided by its own composer, as when it is alone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.delivery import outbox
from bot.delivery.kinds import OutboxKind
from bot.models import OutboxMessage, Referral, Target
from rota.planner import ChainLink, resolve_recipient, resolve_recipients
from rota.store import RotaStore

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEY = "handover_batch_reads"  # in Session.info: (transaction, Reads)


@dataclass
class Reads:
    """One transaction's shared reads."""

    store: RotaStore
    # (target spec, instant) -> the first in its chain at work then, for the batch's prompts
    recipients: dict[tuple[str, datetime], ChainLink | None] = field(default_factory=dict)
    # What `preload` read, kept alive so that `session.get` finds it in the identity map.
    loaded: list[object] = field(default_factory=list)


def reads_of(session: Session) -> Reads:
    """The shared reads of `session`'s current transaction (new for a new transaction)."""
    transaction = session.get_transaction()
    cached = session.info.get(_KEY)
    if cached is not None and cached[0] is transaction:
        return cached[1]
    reads = Reads(RotaStore(session))
    session.info[_KEY] = (transaction, reads)
    return reads


def store_of(session: Session) -> RotaStore:
    """The rota as this transaction has read it so far (one store for a whole batch)."""
    return reads_of(session).store


def target_of(session: Session, row: OutboxMessage) -> Target | None:
    """The target `row` is about, or None for a row about none (from the identity map when
    `preload` read it)."""
    return session.get(Target, row.target_id) if row.target_id else None


def recipient_at(
    session: Session, target: str, t: datetime, tz: ZoneInfo, excluding: Collection[str] = ()
) -> ChainLink | None:
    """`rota.planner.resolve_recipient`, answered from the batch's reading when it has one."""
    reads = reads_of(session)
    if not excluding and (target, t) in reads.recipients:
        return reads.recipients[(target, t)]
    return resolve_recipient(reads.store, target, t, tz, excluding=excluding)


def preload(
    session: Session,
    rows: Iterable[OutboxMessage],
    *,
    tz: ZoneInfo,
    resolve_at: datetime | None = None,
) -> None:
    """Read what composing or confirming these rows needs, a statement per kind of thing: their
    referrals, targets, recipients and recipients' teams; with `resolve_at`, also who each
    prompt's target reaches then."""
    rows = list(rows)
    reads = reads_of(session)
    referral_ids = sorted({row.referral_id for row in rows})
    target_ids = sorted({row.target_id for row in rows if row.target_id is not None})
    if referral_ids:
        reads.loaded += session.scalars(
            select(Referral).where(Referral.referral_id.in_(referral_ids))
        ).all()
    targets: list[Target] = []
    if target_ids:
        targets = list(session.scalars(select(Target).where(Target.id.in_(target_ids))))
        reads.loaded += targets
    prompted = {row.target_id for row in rows if row.kind == OutboxKind.PROMPT}
    specs = [target.spec for target in targets if target.id in prompted]
    if specs and resolve_at is not None:
        links = resolve_recipients(reads.store, specs, resolve_at, tz)
        reads.recipients.update({(spec, resolve_at): link for spec, link in links.items()})
    recipients = [row.recipient_id for row in rows if row.recipient_id]
    recipients += [link.recipient for link in reads.recipients.values() if link is not None]
    people = reads.store.people_by_ids(recipients)
    reads.store.teams_by_ids(person.team_id for person in people.values())


def warm_up(session: Session, now: datetime, *, tz: ZoneInfo, instance_id: str) -> None:
    """Run the statements that composing a batch starts with (its rows, `preload`, routing)
    for a row and a target that do not exist: reads that find nothing and lock nothing.

    SQLAlchemy compiles each statement once a process, at its first use; for a batch that is
    a few tenths of a second on a busy machine, and without this the dispatcher's first batch
    pays it at the instant its messages are due (docs/timing.md, "How fast")."""
    nobody = "warm-up"  # what it finds, if anything, is never used
    outbox.owned_many(session, [0], instance_id)
    row = OutboxMessage(
        kind=OutboxKind.PROMPT, referral_id=nobody, target_id=0, recipient_id=nobody
    )
    preload(session, [row], tz=tz, resolve_at=now)
    store = reads_of(session).store
    store.teams_by_ids([nobody])
    resolve_recipients(store, [f"person:{nobody}"], now, tz)
    # Then the claim's read (no row is due before the epoch, so it claims and locks nothing),
    # and the working-time calendar's closures, which composing a prompt reads.
    outbox.claim_due(session, _EPOCH, instance_id=instance_id, limit=1)
    store.closures_between(now.date(), now.date(), {nobody})


def warm_up_writes(session: Session, now: datetime, *, instance_id: str) -> None:
    """Run the check made just before each send (`outbox.hold_claim`) for a row that does not
    exist: an UPDATE of no row, compiled before the first row is due. The caller rolls back."""
    connection = session.connection()  # as the send checks it: on a Connection
    outbox.hold_claim(connection, 0, instance_id=instance_id, now=now, lease=outbox.DEFAULT_LEASE)
