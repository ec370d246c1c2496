"""The outbox of Slack messages the bot owes (`Prompt` rows): claiming, confirming, retrying.

A dispatcher *claims* due rows with a lease, commits, talks to Slack outside any transaction,
then confirms in a second short transaction. Every state change is a compare-and-set on
(state, claimed_by), so two dispatchers never both own a row, and a dispatcher whose lease ran
out cannot confirm over another's. A claim whose lease expired (its dispatcher died between
post and confirm) is claimed again with `needs_check`: the message may already be in Slack.

These functions take a session and never commit (the caller scopes the transaction).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from bot.delivery.kinds import OutboxKind, RowState
from bot.models import OutboxMessage

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=15)
DEFAULT_LEASE = timedelta(minutes=10)
DISPATCH_KEY = "dispatch"  # our bookkeeping inside Prompt.detail, beside intake's keys


def backoff(attempts: int) -> timedelta:
    """Delay before retry number `attempts` (1-based): 30 s doubling, capped at 15 min."""
    if attempts <= 0:
        return timedelta(0)
    return min(BACKOFF_CAP, BACKOFF_BASE * (2 ** min(attempts - 1, 16)))


def load_detail(prompt: OutboxMessage) -> dict[str, Any]:
    """The row's detail JSON as a dict (empty when absent or not an object)."""
    if not prompt.detail:
        return {}
    try:
        value = json.loads(prompt.detail)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def dispatch_state(prompt: OutboxMessage) -> dict[str, Any]:
    """The dispatcher's bookkeeping for this row (needs_check, first_claimed_at, …)."""
    state = load_detail(prompt).get(DISPATCH_KEY)
    return dict(state) if isinstance(state, dict) else {}


def dumps(detail: dict[str, Any]) -> str:
    """Detail JSON as stored (keys sorted, so equal details compare equal)."""
    return json.dumps(detail, sort_keys=True)


def note(prompt: OutboxMessage, **changes: Any) -> None:
    """Record dispatcher bookkeeping in the row's detail (e.g. the via chosen at send time)."""
    _set_dispatch_state(prompt, **changes)


def _set_dispatch_state(prompt: OutboxMessage, **changes: Any) -> None:
    detail = load_detail(prompt)
    state = detail.get(DISPATCH_KEY)
    state = dict(state) if isinstance(state, dict) else {}
    state.update(changes)
    detail[DISPATCH_KEY] = state
    prompt.detail = dumps(detail)


def needs_check(prompt: OutboxMessage) -> bool:
    """Whether the message may already be in Slack, so history must be searched before posting."""
    return bool(dispatch_state(prompt).get("needs_check"))


def first_claimed_at(prompt: OutboxMessage) -> datetime | None:
    """When the row was first claimed: no message for it can be older."""
    text = dispatch_state(prompt).get("first_claimed_at")
    return datetime.fromisoformat(text) if text else None


def last_post_attempt_at(prompt: OutboxMessage) -> datetime | None:
    """When the latest attempt to post this row began (it may have reached Slack)."""
    text = dispatch_state(prompt).get("last_post_attempt_at")
    return datetime.fromisoformat(text) if text else None


def _due_clause(now: datetime):
    ready = and_(
        OutboxMessage.state == RowState.PENDING,
        OutboxMessage.due_at <= now,
        or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now),
    )
    abandoned = and_(OutboxMessage.state == RowState.CLAIMED, OutboxMessage.claimed_until < now)
    return or_(ready, abandoned)


def claim_due(
    session: Session,
    now: datetime,
    *,
    instance_id: str,
    limit: int,
    lease: timedelta = DEFAULT_LEASE,
) -> list[OutboxMessage]:
    """Claim up to `limit` due rows for `instance_id` until now + lease, oldest due first.

    Due: pending with due_at and next_attempt_at passed, or claimed with an expired lease
    (marked needs_check). PostgreSQL skips rows other dispatchers hold locked; SQLite
    (already serialised by BEGIN IMMEDIATE) claims with a compare-and-set per row.
    """
    query = (
        select(OutboxMessage)
        .where(_due_clause(now))
        .order_by(OutboxMessage.due_at, OutboxMessage.id)
        .limit(limit)
    )
    abandoned: set[int] = set()
    claimed: list[OutboxMessage] = []
    if session.get_bind().dialect.name == "postgresql":
        for prompt in session.scalars(query.with_for_update(skip_locked=True)):
            if prompt.state == RowState.CLAIMED:
                abandoned.add(prompt.id)
            claimed.append(prompt)
    else:
        candidates = session.execute(
            select(OutboxMessage.id, OutboxMessage.state, OutboxMessage.claimed_until)
            .where(_due_clause(now))
            .order_by(OutboxMessage.due_at, OutboxMessage.id)
            .limit(limit)
        ).all()
        for prompt_id, state, claimed_until in candidates:
            guard = [OutboxMessage.id == prompt_id, OutboxMessage.state == state]
            if state == RowState.CLAIMED:
                guard.append(OutboxMessage.claimed_until == claimed_until)
            result = session.execute(
                update(OutboxMessage)
                .where(*guard)
                .values(state=RowState.CLAIMED, claimed_by=instance_id, claimed_until=now + lease)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                continue  # another dispatcher took it first
            if state == RowState.CLAIMED:
                abandoned.add(prompt_id)
            claimed.append(session.get(OutboxMessage, prompt_id, populate_existing=True))
    for prompt in claimed:
        changes: dict[str, Any] = {}
        if dispatch_state(prompt).get("first_claimed_at") is None:
            changes["first_claimed_at"] = now.isoformat()
        if prompt.id in abandoned:
            changes["needs_check"] = True
        prompt.state = RowState.CLAIMED
        prompt.claimed_by = instance_id
        prompt.claimed_until = now + lease
        if changes:
            _set_dispatch_state(prompt, **changes)
    session.flush()
    return claimed


def next_due_at(session: Session) -> datetime | None:
    """The earliest instant at which some row becomes due (for scheduling the next wake-up)."""
    ready_at = case(
        (OutboxMessage.next_attempt_at > OutboxMessage.due_at, OutboxMessage.next_attempt_at),
        else_=OutboxMessage.due_at,
    )
    pending = session.scalar(
        select(func.min(ready_at)).where(OutboxMessage.state == RowState.PENDING)
    )
    lease_ends = session.scalar(
        select(func.min(OutboxMessage.claimed_until)).where(OutboxMessage.state == RowState.CLAIMED)
    )
    # min() over a CASE loses the column type on some backends: normalise to aware UTC.
    candidates = [_aware(t) for t in (pending, lease_ends) if t is not None]
    return min(candidates) if candidates else None


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def owned(session: Session, prompt_id: int, instance_id: str) -> OutboxMessage | None:
    """The row, locked and fresh, if `instance_id` still holds its claim; else None."""
    return session.scalars(
        select(OutboxMessage)
        .where(
            OutboxMessage.id == prompt_id,
            OutboxMessage.state == RowState.CLAIMED,
            OutboxMessage.claimed_by == instance_id,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def renew_claim(
    session: Session, prompt_id: int, *, instance_id: str, now: datetime, lease: timedelta
) -> OutboxMessage | None:
    """Extend our lease just before talking to Slack; None when the claim is no longer ours."""
    prompt = owned(session, prompt_id, instance_id)
    if prompt is not None:
        prompt.claimed_until = now + lease
    return prompt


def mark_sent(
    session: Session,
    prompt_id: int,
    *,
    instance_id: str,
    now: datetime,
    channel: str,
    ts: str,
    late: bool,
) -> OutboxMessage | None:
    """Confirm delivery (message `channel`/`ts`); None if our claim was lost meanwhile."""
    prompt = owned(session, prompt_id, instance_id)
    if prompt is None:
        return None
    prompt.state = RowState.SENT
    prompt.sent_at = now
    prompt.message_channel = channel
    prompt.message_ts = ts
    prompt.late = late
    prompt.claimed_until = None
    prompt.last_error = None
    _set_dispatch_state(prompt, needs_check=False)
    return prompt


def release_for_retry(
    session: Session,
    prompt_id: int,
    *,
    instance_id: str,
    now: datetime,
    error: str,
    may_have_posted: bool = False,
    not_before: datetime | None = None,
) -> OutboxMessage | None:
    """Back to pending with attempts+1 and next_attempt_at = now + backoff (or not_before).

    `may_have_posted` (an ambiguous failure) makes the next attempt search history first.
    """
    prompt = owned(session, prompt_id, instance_id)
    if prompt is None:
        return None
    prompt.attempts = (prompt.attempts or 0) + 1
    retry_at = now + backoff(prompt.attempts)
    if not_before is not None and not_before > retry_at:
        retry_at = not_before
    _release(prompt, next_attempt_at=retry_at)
    prompt.last_error = error[:500]
    if may_have_posted:
        _set_dispatch_state(prompt, needs_check=True)
    return prompt


def _release(prompt: OutboxMessage, *, next_attempt_at: datetime | None) -> None:
    """Hand a claimed row back to pending, to be claimed again from `next_attempt_at`."""
    prompt.state = RowState.PENDING
    prompt.next_attempt_at = next_attempt_at
    prompt.claimed_by = None
    prompt.claimed_until = None


def defer(
    session: Session, prompt_id: int, *, instance_id: str, until: datetime
) -> OutboxMessage | None:
    """Back to pending without counting an attempt (waiting on something else, not failing)."""
    prompt = owned(session, prompt_id, instance_id)
    if prompt is None:
        return None
    _release(prompt, next_attempt_at=until)
    return prompt


def reschedule(
    session: Session, prompt_id: int, *, instance_id: str, due_at: datetime
) -> OutboxMessage | None:
    """Move a claimed row to a new due time (the rota changed: nobody is at work now)."""
    prompt = owned(session, prompt_id, instance_id)
    if prompt is None:
        return None
    original = dispatch_state(prompt).get("original_due_at") or prompt.due_at.isoformat()
    prompt.due_at = due_at
    _release(prompt, next_attempt_at=None)
    _set_dispatch_state(prompt, original_due_at=original)
    return prompt


def mark_failed(
    session: Session, prompt_id: int, *, instance_id: str, now: datetime, error: str
) -> OutboxMessage | None:
    """Give up on a row after a permanent error (the caller raises an alert)."""
    prompt = owned(session, prompt_id, instance_id)
    if prompt is None:
        return None
    prompt.state = RowState.FAILED
    prompt.attempts = (prompt.attempts or 0) + 1
    prompt.claimed_until = None
    prompt.last_error = error[:500]
    return prompt


def mark_cancelled(
    session: Session, prompt_id: int, *, instance_id: str, reason: str
) -> OutboxMessage | None:
    """Cancel a claimed row that is no longer owed (its referral was closed)."""
    prompt = owned(session, prompt_id, instance_id)
    if prompt is None:
        return None
    prompt.state = RowState.CANCELLED
    prompt.claimed_until = None
    prompt.last_error = reason[:500]
    return prompt


def enqueue_card_refresh(session: Session, referral_id: str, now: datetime) -> OutboxMessage:
    """Ask for the referral's card to be redrawn; at most one pending card row per referral."""
    pending = session.scalars(
        select(OutboxMessage)
        .where(
            OutboxMessage.referral_id == referral_id,
            OutboxMessage.kind == OutboxKind.CARD,
            OutboxMessage.state == RowState.PENDING,
        )
        .order_by(OutboxMessage.id)
        .limit(1)
    ).first()
    if pending is not None:
        if pending.due_at > now:
            pending.due_at = now
        return pending
    row = OutboxMessage(
        referral_id=referral_id,
        kind=OutboxKind.CARD,
        due_at=now,
        state=RowState.PENDING,
        attempts=0,
    )
    session.add(row)
    session.flush()
    return row


def unfinished_card_before(session: Session, referral_id: str, prompt_id: int) -> bool:
    """Whether an earlier card row of the referral is still pending or in flight."""
    return (
        session.scalar(
            select(func.count(OutboxMessage.id)).where(
                OutboxMessage.referral_id == referral_id,
                OutboxMessage.kind == OutboxKind.CARD,
                OutboxMessage.id < prompt_id,
                OutboxMessage.state.in_((RowState.PENDING, RowState.CLAIMED)),
            )
        )
        or 0
    ) > 0
