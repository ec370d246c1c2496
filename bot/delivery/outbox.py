"""The outbox: every message the bot owes, as `OutboxMessage` rows; creating, claiming, settling.

This is the only place that creates outbox rows (the `enqueue_*` functions). A dispatcher
*claims* a batch of due rows with a lease, commits, talks to the channel outside any
transaction, then settles them in a short transaction (a batch's rows in one). Every state
change is made only while the row is still (state, claimed_by) ours, read locked (`owned`,
`owned_many`), so two dispatchers never both own a row, and a dispatcher whose lease ran out
cannot settle over another's. A claim whose lease expired (its dispatcher died between
sending and confirming) is claimed again with `needs_check`: the message may already be sent.

These functions take a session and never commit (the caller scopes the transaction).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from bot.delivery.kinds import (
    ACKNOWLEDGED_ALERT_KINDS,
    ALERT_ROW_KINDS,
    LOOP_ROW_KINDS,
    ONCALL_FOLLOW_UP_KINDS,
    OutboxKind,
    RowState,
)
from bot.models import OutboxMessage, Referral, Target
from rota.escalation import ESCALATE, ESCALATE_CHANNEL, REMIND

logger = logging.getLogger(__name__)

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=15)
# A claim lasts this long unless its holder renews it (`renew_claims`, every LEASE_RENEWAL while
# it works, also while it waits out a rate limit): a dead dispatcher's rows are free again
# within a lease, and taken over at once by a running one, which wakes at the lease's end.
DEFAULT_LEASE = timedelta(seconds=30)
LEASE_RENEWAL = timedelta(seconds=10)
DISPATCH_KEY = "dispatch"  # our bookkeeping inside OutboxMessage.detail, beside the kind's keys
# How far before the first claim a message for the row could carry a timestamp: covers clock
# skew between us and the channel.
HISTORY_MARGIN = timedelta(minutes=10)
# Kinds an answer leaves alone: the prompt itself, the EDT card, a promise's rows, and a step's
# messages but those that chase (`_chases`).
_NOT_CHASED_KINDS = (
    OutboxKind.PROMPT,
    OutboxKind.CARD,
    OutboxKind.STEP_MESSAGE,
    *sorted(LOOP_ROW_KINDS),
)


def backoff(attempts: int) -> timedelta:
    """Delay before retry number `attempts` (1-based): 30 s doubling, capped at 15 min."""
    if attempts <= 0:
        return timedelta(0)
    return min(BACKOFF_CAP, BACKOFF_BASE * (2 ** min(attempts - 1, 16)))


# ----- the row's detail and the dispatcher's bookkeeping in it ----------------------------------


def load_detail(row: OutboxMessage) -> dict[str, Any]:
    """The row's detail JSON as a dict (empty when absent or not an object)."""
    if not row.detail:
        return {}
    try:
        value = json.loads(row.detail)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def dumps(detail: Mapping[str, Any]) -> str:
    """Detail JSON as stored (keys sorted, so equal details compare equal)."""
    return json.dumps(detail, sort_keys=True)


def update_detail(row: OutboxMessage, **changes: Any) -> None:
    """Set keys of the row's detail."""
    row.detail = dumps({**load_detail(row), **changes})


def dispatch_state(row: OutboxMessage) -> dict[str, Any]:
    """The dispatcher's bookkeeping for this row (needs_check, first_claimed_at, …)."""
    state = load_detail(row).get(DISPATCH_KEY)
    return dict(state) if isinstance(state, dict) else {}


def note(row: OutboxMessage, **changes: Any) -> None:
    """Record dispatcher bookkeeping in the row's detail (e.g. the via chosen at send time)."""
    update_detail(row, **{DISPATCH_KEY: {**dispatch_state(row), **changes}})


def needs_check(row: OutboxMessage) -> bool:
    """Whether the message may already be sent, so the channel must be searched first."""
    return bool(dispatch_state(row).get("needs_check"))


def unreachable_on(row: OutboxMessage) -> dict[str, str]:
    """The channels that could not reach this row's person, with why (in the order tried)."""
    # Kept as [channel, error] pairs: the detail's keys are stored sorted, not in order.
    tried = dispatch_state(row).get("unreachable_on")
    pairs = tried if isinstance(tried, list) else []
    return {str(pair[0]): str(pair[1]) for pair in pairs if len(pair) == 2}


def parse_instant(text: object) -> datetime | None:
    """An instant kept in a detail as ISO text (None when absent or garbled)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def passed_over(row: OutboxMessage) -> dict[str, str]:
    """The people (or rooms) a prompt passed over because nobody could reach them, with why."""
    given = dispatch_state(row).get("passed_over")
    pairs = given if isinstance(given, list) else []
    return {str(pair[0]): str(pair[1]) for pair in pairs if len(pair) == 2}


def _instant(row: OutboxMessage, key: str) -> datetime | None:
    text = dispatch_state(row).get(key)
    return datetime.fromisoformat(text) if text else None


def first_claimed_at(row: OutboxMessage) -> datetime | None:
    """When the row was first claimed: no message for it can be older."""
    return _instant(row, "first_claimed_at")


def last_post_attempt_at(row: OutboxMessage) -> datetime | None:
    """When the latest attempt to send this row began (it may have reached the channel)."""
    return _instant(row, "last_post_attempt_at")


def history_since(row: OutboxMessage) -> datetime | None:
    """How far back a message of this row could be: its first claim by our clock or by the wall
    clock (the channel stamps messages with its own; ours may be simulated), less a margin."""
    starts = [t for t in (first_claimed_at(row), _instant(row, "first_claimed_wall")) if t]
    return min(starts) - HISTORY_MARGIN if starts else None


# ----- creating rows ----------------------------------------------------------------------------

NOTIFY_CHANNEL = "handover_outbox"  # what `wakeups.OutboxWatch` LISTENs to on PostgreSQL
_ANNOUNCE = "handover_outbox_announce"  # session.info: this transaction wrote rows to announce


def announce(session: Session) -> None:
    """Tell every dispatcher, once this transaction commits, that rows are new or due sooner.

    On PostgreSQL a NOTIFY, sent after the commit on a connection of its own (a rollback sends
    nothing). Not inside the transaction: PostgreSQL serialises the commits of notifying
    transactions on one lock, and a wait there must never fail the write itself. On SQLite
    nothing is needed: the dispatchers watch the file's data_version (`wakeups.OutboxWatch`).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.info[_ANNOUNCE] = True


@event.listens_for(Session, "after_commit")
def _notify_after_commit(session: Session) -> None:
    if not session.info.pop(_ANNOUNCE, False):
        return
    try:
        # `.engine`: the session may be bound to an engine or to one of its connections.
        with session.get_bind().engine.connect() as connection:
            connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
            connection.commit()
    except Exception:
        # The rows are committed, whatever happens here; a dispatcher's safety pass finds them.
        logger.warning("could not announce new outbox rows; the safety pass will find them")


@event.listens_for(Session, "after_soft_rollback")
def _forget_announcement(session: Session, _previous_transaction: Any) -> None:
    if not session.in_transaction():  # the whole transaction, not a savepoint, rolled back
        session.info.pop(_ANNOUNCE, None)


def _add(session: Session, *, save: bool = True, **fields: Any) -> OutboxMessage:
    """A new pending row, inserted at once; `save=False`: not yet, for `insert_rows`."""
    detail = fields.pop("detail", None)
    row = OutboxMessage(state=RowState.PENDING, attempts=0, **fields)
    if detail is not None:
        row.detail = dumps({k: v for k, v in detail.items() if v is not None})
    if save:
        session.add(row)
        session.flush()
        announce(session)
    return row


def insert_rows(session: Session, rows: Sequence[OutboxMessage]) -> None:
    """Insert new rows (`save=False`) in one statement, their ids not read back: a batch's
    escalation steps cost one INSERT, not one each."""
    if not rows:
        return
    columns = [column.key for column in OutboxMessage.__table__.columns if column.key != "id"]
    # What a row leaves unset takes its column's default, as when it is added alone.
    values = [{k: v for k in columns if (v := getattr(r, k)) is not None} for r in rows]
    session.execute(insert(OutboxMessage), values)
    announce(session)


def enqueue_prompt(
    session: Session, target: Target, due_at: datetime, **detail: Any
) -> OutboxMessage:
    """The prompt of a routable target, due at its T0; `detail` says how it was planned."""
    return _add(
        session,
        referral_id=target.referral_id,
        target_id=target.id,
        kind=OutboxKind.PROMPT,
        due_at=due_at,
        detail=detail,
    )


def enqueue_alert(
    session: Session,
    kind: OutboxKind,
    referral_id: str,
    *,
    due_at: datetime,
    target_id: int | None = None,
    recipient_id: str | None = None,
    address: str | None = None,
    **detail: Any,
) -> OutboxMessage:
    """An alert: a DM to `recipient_id` (an on-call holder), or a post at `address`.

    Every holder's row of one alert (the same kind and facts) carries the same `alert_key`, so
    one acknowledgement answers for all of them (docs/reference/slack.md, "On-call alerts").
    """
    if kind not in ALERT_ROW_KINDS:
        raise ValueError(f"{kind!r} is not an alert")
    if kind in ACKNOWLEDGED_ALERT_KINDS and recipient_id is not None:
        detail["alert_key"] = _alert_key(kind, target_id, detail)
    return _add(
        session,
        referral_id=referral_id,
        target_id=target_id,
        kind=kind,
        recipient_id=recipient_id,
        address=address,
        due_at=due_at,
        detail=detail,
    )


def _alert_key(kind: str, target_id: int | None, detail: Mapping[str, Any]) -> str:
    """What identifies one alert among a referral's, whoever holds it: its kind and facts."""
    facts = {k: v for k, v in detail.items() if v is not None and k != "alert_key"}
    text = dumps({"kind": str(kind), "target_id": target_id, "facts": facts})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def alert_key(row: OutboxMessage) -> str | None:
    """The alert an on-call alert row (or one of its follow-ups) belongs to; None when the row
    is not one (a post to a room, a delivery failure)."""
    if row.kind in ONCALL_FOLLOW_UP_KINDS:
        return load_detail(row).get("alert_key")
    if row.kind not in ACKNOWLEDGED_ALERT_KINDS or row.recipient_id is None:
        return None
    detail = load_detail(row)
    key = detail.get("alert_key")
    if key is None:  # written before alerts were acknowledged
        facts = {k: v for k, v in detail.items() if k != DISPATCH_KEY}
        key = _alert_key(row.kind, row.target_id, facts)
    return key


def rows_of_alert(
    session: Session, referral_id: str, key: str, kinds: frozenset[str] | None = None
) -> list[OutboxMessage]:
    """The rows of one alert (every holder's DM, and the follow-ups), oldest first."""
    wanted = kinds if kinds is not None else ACKNOWLEDGED_ALERT_KINDS | ONCALL_FOLLOW_UP_KINDS
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.referral_id == referral_id, OutboxMessage.kind.in_(wanted))
        .order_by(OutboxMessage.id)
    )
    return [row for row in rows if alert_key(row) == key]


def enqueue_oncall_follow_ups(
    session: Session, alert: OutboxMessage, *, sent_at: datetime, repage_after: timedelta
) -> list[OutboxMessage]:
    """What an on-call alert DM owes until it is acknowledged: the DM again to its holder at
    `sent_at + repage_after`, and at twice that a post in the EDT channel naming every holder
    who did not answer (one per alert: not made again when another holder's row made it)."""
    key = alert_key(alert)
    if key is None:
        raise ValueError(f"row {alert.id} is not an on-call alert")
    facts = {k: v for k, v in load_detail(alert).items() if k != DISPATCH_KEY}
    common = {
        **facts,
        "alert_key": key,
        "alert_kind": str(alert.kind),
        "alert_row_id": alert.id,
        "alert_sent_at": sent_at.isoformat(),
    }
    made = [
        _add(
            session,
            referral_id=alert.referral_id,
            target_id=alert.target_id,
            kind=OutboxKind.ONCALL_REPAGE,
            recipient_id=alert.recipient_id,
            due_at=sent_at + repage_after,
            detail=common,
        )
    ]
    owed = rows_of_alert(session, alert.referral_id, key, frozenset({OutboxKind.ONCALL_UNANSWERED}))
    if not owed:
        made.append(
            _add(
                session,
                referral_id=alert.referral_id,
                target_id=alert.target_id,
                kind=OutboxKind.ONCALL_UNANSWERED,
                due_at=sent_at + 2 * repage_after,
                detail=common,
            )
        )
    return made


def cancel_alert_follow_ups(session: Session, referral_id: str, key: str) -> int:
    """Cancel an acknowledged alert's re-pages and EDT-channel post not yet sent (pending, or
    claimed in a batch: `_cancel_open`)."""
    rows = [
        row
        for row in rows_of_alert(session, referral_id, key, ONCALL_FOLLOW_UP_KINDS)
        if row.state in OPEN_STATES
    ]
    return len(_cancel_open(session, rows, "acknowledged"))


def enqueue_card(
    session: Session, referral_id: str, now: datetime, address: str | None
) -> OutboxMessage:
    """The first posting of a referral's card (in the EDT channel at `address`)."""
    return _add(session, referral_id=referral_id, kind=OutboxKind.CARD, address=address, due_at=now)


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
            announce(session)
        return pending
    return _add(session, referral_id=referral_id, kind=OutboxKind.CARD, due_at=now)


def redraw_card(
    session: Session, referral: Referral, now: datetime, *, edt_channel: str | None
) -> None:
    """Ask for the referral's card to be redrawn, when it has (or can have) one."""
    if referral.card_channel or edt_channel:
        enqueue_card_refresh(session, referral.referral_id, now)


def enqueue_escalation_step(
    session: Session, prompt: OutboxMessage, step: str, due_at: datetime, *, save: bool = True
) -> OutboxMessage:
    """One escalation step of a sent prompt, at its own instant (even one already past);
    `save=False`: the row for `insert_rows`, not yet inserted."""
    return _add(
        session,
        save=save,
        referral_id=prompt.referral_id,
        target_id=prompt.target_id,
        kind=OutboxKind.ESCALATION,
        recipient_id=prompt.recipient_id,
        due_at=due_at,
        detail={"prompt_id": prompt.id, "step": step},
    )


def enqueue_step_message(
    session: Session,
    step_row: OutboxMessage,
    *,
    recipient_id: str | None,
    address: str | None,
    **detail: Any,
) -> OutboxMessage:
    """One message of a performed escalation step: to a person (`recipient_id`, resolved when
    sent) or to a conversation (`address`), due when its step was."""
    return _add(
        session,
        referral_id=step_row.referral_id,
        target_id=step_row.target_id,
        kind=OutboxKind.STEP_MESSAGE,
        recipient_id=recipient_id,
        address=address,
        due_at=step_row.due_at,
        detail={"step_row_id": step_row.id, **detail},
    )


def enqueue_copy(
    session: Session,
    row: OutboxMessage,
    *,
    channel: str,
    person_id: str,
    message: Mapping[str, Any],
    now: datetime,
) -> OutboxMessage:
    """A copy of a message `row` delivered, for the same person by another `channel` (their
    contact is slack+email); `message` is what was delivered, as `copy.message_record` keeps
    it. Due at once; chased and cancelled with `row`'s target."""
    return _add(
        session,
        referral_id=row.referral_id,
        target_id=row.target_id,
        kind=OutboxKind.COPY,
        recipient_id=person_id,
        channel=channel,
        due_at=now,
        detail={"copy_of": row.id, "copy_of_kind": str(row.kind), "message": dict(message)},
    )


def enqueue_loop_message(
    session: Session,
    kind: OutboxKind,
    referral_id: str,
    *,
    target_id: int | None,
    due_at: datetime,
    recipient_id: str | None = None,
    **detail: Any,
) -> OutboxMessage:
    """A row of a promised contact (docs/closing-the-loop.md): a notice, a check, the end of
    the day's look at it, or a missed-contact DM. `recipient_id` is a person, or none for the
    daytime owner's chain, resolved when due."""
    if kind not in LOOP_ROW_KINDS:
        raise ValueError(f"{kind!r} is not a row of a promised contact")
    return _add(
        session,
        referral_id=referral_id,
        target_id=target_id,
        kind=kind,
        recipient_id=recipient_id,
        due_at=due_at,
        detail=detail,
    )


def cancel_loop_rows(session: Session, followup_id: int, kinds: Iterable[OutboxKind]) -> int:
    """Cancel a promised contact's rows of `kinds` not yet sent (it was answered)."""
    rows = _open_rows(
        session,
        OutboxMessage.kind.in_(sorted(kinds)),
        OutboxMessage.detail.contains(f'"followup_id": {followup_id}'),
    )
    ours = [row for row in rows if load_detail(row).get("followup_id") == followup_id]
    return len(_cancel_open(session, ours, "contact answered"))


# ----- cancelling what is no longer owed --------------------------------------------------------

OPEN_STATES = (RowState.PENDING, RowState.CLAIMED)
# The messages of a performed step that chase the target (the reminder, the escalation DMs, the
# post in the escalation channel): an answer or a close cancels those not yet sent. A breach's
# messages are not: the breach happened, and its event is written when they settle.
_CHASING_STEPS = frozenset({REMIND, ESCALATE, ESCALATE_CHANNEL})


def _open_rows(session: Session, *criteria: Any) -> list[OutboxMessage]:
    """Rows not yet sent (pending, or claimed in a dispatcher's batch) matching `criteria`,
    locked and fresh: a row its dispatcher settles meanwhile is read as settled, never
    cancelled over (PostgreSQL re-reads a row it waited for; SQLite's writers are serialised)."""
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.state.in_(OPEN_STATES), *criteria)
            .order_by(OutboxMessage.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def _cancel_open(
    session: Session, rows: Sequence[OutboxMessage], reason: str
) -> list[OutboxMessage]:
    """Cancel rows not yet sent, for `reason`.

    A claimed row is cancelled too, keeping `claimed_by`: its dispatcher's check just before
    the send (`hold_claim`) then refuses it, and `cancelled_under_claim` tells that dispatcher
    it was cancelled rather than taken over. A send already past that check goes out, and is
    recorded as sent (`cancelled_while_sending`; docs/timing.md, "Cancelled in a batch").
    It keeps its holder's lease too (`claimed_until`): until its holder settles it, a row
    whose lease ends is looked for in its channel by any dispatcher (`claim_unsettled`).
    """
    for row in rows:
        if row.state == RowState.CLAIMED:
            note(row, cancelled_while_claimed=True)
        else:
            row.claimed_until = None
        row.state = RowState.CANCELLED
        row.last_error = reason[:500]
    session.flush()
    return list(rows)


def _chases(row: OutboxMessage) -> bool:
    """Whether the row chases its target (not a prompt, a card, a breach or a promise's row)."""
    if row.kind == OutboxKind.STEP_MESSAGE:
        return load_detail(row).get("step") in _CHASING_STEPS
    return row.kind not in _NOT_CHASED_KINDS


def cancel_chasers(session: Session, target_id: int) -> int:
    """Cancel a target's reminders, escalation steps, their chasing messages and alerts not yet
    sent (it was answered)."""
    rows = _open_rows(session, OutboxMessage.target_id == target_id)
    return len(_cancel_open(session, [row for row in rows if _chases(row)], "answered"))


def cancel_owed_by(session: Session, referral_id: str) -> list[OutboxMessage]:
    """Cancel every row of a closed referral not yet sent but its card and a breach's messages;
    the rows cancelled."""
    rows = _open_rows(
        session,
        OutboxMessage.referral_id == referral_id,
        OutboxMessage.kind != OutboxKind.CARD,
    )
    owed = [row for row in rows if row.kind != OutboxKind.STEP_MESSAGE or _chases(row)]
    return _cancel_open(session, owed, "referral closed")


def cancelled_under_claim(session: Session, row_id: int, instance_id: str) -> OutboxMessage | None:
    """The row, if it was cancelled while `instance_id` held it in a batch (`_cancel_open`;
    why is its `last_error`); None when it was not (the claim was lost to another dispatcher,
    or the row is still ours)."""
    row = session.get(OutboxMessage, row_id, populate_existing=True)
    if (
        row is None
        or row.state != RowState.CANCELLED
        or row.claimed_by != instance_id
        or not dispatch_state(row).get("cancelled_while_claimed")
    ):
        return None
    return row


def settle_cancelled(row: OutboxMessage) -> None:
    """A row cancelled under a claim is known not to have been sent: nobody looks for it."""
    row.claimed_until = None


def _unsettled_clause(now: datetime) -> ColumnElement[bool]:
    """Rows cancelled under a claim whose holder's lease ended before it settled them."""
    return and_(OutboxMessage.state == RowState.CANCELLED, OutboxMessage.claimed_until < now)


def any_unsettled(session: Session, now: datetime) -> bool:
    """Whether some row waits to be looked for (`claim_unsettled` would find one): one read of
    the (state, claimed_until) index, locking nothing, so a pass with nothing to settle writes
    nothing."""
    return (
        session.scalar(select(OutboxMessage.id).where(_unsettled_clause(now)).limit(1)) is not None
    )


def claim_unsettled(
    session: Session,
    now: datetime,
    *,
    instance_id: str,
    lease: timedelta = DEFAULT_LEASE,
) -> OutboxMessage | None:
    """Claim, for `instance_id` until now + lease, the oldest row cancelled while a dispatcher
    held it whose holder's lease ended before it said whether it sent it (it may have died
    after its post reached the channel); None when there is none.

    Read from the (state, claimed_until) index; PostgreSQL skips a row another dispatcher has
    locked, and the new lease keeps others off it while it is looked for. The holder stays
    `claimed_by` (so if it resumes, it still settles what it sent); who looks is in the
    dispatcher's bookkeeping (`reconciling_by`).
    """
    query = (
        select(OutboxMessage)
        .where(_unsettled_clause(now))
        .order_by(OutboxMessage.claimed_until, OutboxMessage.id)
        .limit(1)
        .execution_options(populate_existing=True)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = session.scalars(query).first()
    if row is not None:
        row.claimed_until = now + lease
        note(row, reconciling_by=instance_id)
        session.flush()
    return row


def unsettled_held(session: Session, row_id: int, instance_id: str) -> OutboxMessage | None:
    """The row, locked and fresh, if it is still cancelled and unsettled and `instance_id`
    is the one looking for it (`claim_unsettled`); else None (its holder settled it meanwhile,
    or another dispatcher took the look over)."""
    row = session.scalars(
        select(OutboxMessage)
        .where(
            OutboxMessage.id == row_id,
            OutboxMessage.state == RowState.CANCELLED,
            OutboxMessage.claimed_until.is_not(None),
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if row is None or dispatch_state(row).get("reconciling_by") != instance_id:
        return None
    return row


def cancelled_while_sending(
    session: Session, row_ids: Iterable[int], instance_id: str
) -> dict[int, OutboxMessage]:
    """Of rows `instance_id` has just sent, those cancelled under its claim meanwhile, locked:
    the send was past its check when the cancellation committed."""
    rows = _claimed_by_in_state(session, row_ids, instance_id, RowState.CANCELLED)
    return {row.id: row for row in rows if dispatch_state(row).get("cancelled_while_claimed")}


# ----- claiming ---------------------------------------------------------------------------------


def _due_clause(now: datetime) -> ColumnElement[bool]:
    """Rows `claim_due` may take: pending, due and past any backoff, or claimed under a lease
    that ended."""
    ready = and_(
        OutboxMessage.state == RowState.PENDING,
        OutboxMessage.due_at <= now,
        or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now),
    )
    abandoned = and_(OutboxMessage.state == RowState.CLAIMED, OutboxMessage.claimed_until < now)
    return or_(ready, abandoned)


def any_due(session: Session, now: datetime) -> bool:
    """Whether some row is due (`claim_due` would find one, but for a row another dispatcher
    holds locked on PostgreSQL): one read of the (state, due_at) and (state, claimed_until)
    indexes, locking nothing, so a pass with nothing due writes nothing."""
    return session.scalar(select(OutboxMessage.id).where(_due_clause(now)).limit(1)) is not None


def work_waiting(session: Session, now: datetime) -> tuple[bool, bool]:
    """Whether some row waits to be looked for (`any_unsettled`) and whether some row is due
    (`any_due`), in one statement reading the same indexes as those two, locking nothing: a
    dispatcher's pass with nothing to do reads this and writes nothing."""
    unsettled, due = session.execute(
        select(exists().where(_unsettled_clause(now)), exists().where(_due_clause(now)))
    ).one()
    return bool(unsettled), bool(due)


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
    (marked needs_check). One SELECT and one UPDATE for the whole batch: PostgreSQL locks the
    rows, skipping those other dispatchers hold locked; SQLite's writers are already
    serialised by BEGIN IMMEDIATE (bot/db.py), so the rows read are still due when written.
    """
    query = (
        select(OutboxMessage)
        .where(_due_clause(now))
        .order_by(OutboxMessage.due_at, OutboxMessage.id)
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = list(session.scalars(query))
    for row in claimed:
        changes: dict[str, Any] = {}
        if dispatch_state(row).get("first_claimed_at") is None:
            changes["first_claimed_at"] = now.isoformat()
        if row.state == RowState.CLAIMED:
            changes["needs_check"] = True  # abandoned: its holder may have sent it
        row.state = RowState.CLAIMED
        row.claimed_by = instance_id
        row.claimed_until = now + lease
        if changes:
            note(row, **changes)
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
    # A claim's lease, or that of a row cancelled under a claim and not yet settled.
    lease_ends = session.scalar(
        select(func.min(OutboxMessage.claimed_until)).where(
            OutboxMessage.state.in_((RowState.CLAIMED, RowState.CANCELLED))
        )
    )
    # min() over a CASE loses the column type on some backends: normalise to aware UTC.
    candidates = [_aware(t) for t in (pending, lease_ends) if t is not None]
    return min(candidates) if candidates else None


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ----- settling a claimed row -------------------------------------------------------------------


def owned(session: Session, row_id: int, instance_id: str) -> OutboxMessage | None:
    """The row, locked and fresh, if `instance_id` still holds its claim; else None."""
    return session.scalars(
        select(OutboxMessage)
        .where(
            OutboxMessage.id == row_id,
            OutboxMessage.state == RowState.CLAIMED,
            OutboxMessage.claimed_by == instance_id,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def owned_many(
    session: Session, row_ids: Iterable[int], instance_id: str
) -> dict[int, OutboxMessage]:
    """`owned` for a batch in one statement: each row, locked and fresh, that `instance_id`
    still holds, by id (a row whose claim is lost is missing)."""
    return {row.id: row for row in _claimed_by_in_state(session, row_ids, instance_id)}


def _claimed_by_in_state(
    session: Session,
    row_ids: Iterable[int],
    instance_id: str,
    state: RowState = RowState.CLAIMED,
) -> list[OutboxMessage]:
    """Those of the rows last claimed by `instance_id` that are in `state`, locked and fresh,
    in one statement."""
    wanted = list(dict.fromkeys(row_ids))
    if not wanted:
        return []
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.id.in_(wanted),
                OutboxMessage.state == state,
                OutboxMessage.claimed_by == instance_id,
            )
            .order_by(OutboxMessage.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def renew_claim(
    session: Session, row_id: int, *, instance_id: str, now: datetime, lease: timedelta
) -> OutboxMessage | None:
    """Extend our lease as the row is composed (the send checks it again, `hold_claim`); None
    when the claim is lost."""
    row = owned(session, row_id, instance_id)
    if row is not None:
        row.claimed_until = now + lease
    return row


def hold_claim(
    session: Session | Connection, row_id: int, *, instance_id: str, now: datetime, lease: timedelta
) -> bool:
    """Whether `instance_id` still holds the row, renewing its lease if so: one UPDATE, made
    immediately before a message is sent, so that a dispatcher that froze (or waited) past its
    lease never sends a row another dispatcher has taken over (docs/timing.md, "Claims that
    cannot be overrun")."""
    return (
        session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == row_id,
                OutboxMessage.state == RowState.CLAIMED,
                OutboxMessage.claimed_by == instance_id,
            )
            .values(claimed_until=now + lease)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def renew_claims(session: Session, *, instance_id: str, now: datetime, lease: timedelta) -> int:
    """Extend the lease of every row `instance_id` holds (its heartbeat); how many it holds.

    Only rows still ours are touched, so a claim already taken over stays with its new holder.
    On PostgreSQL a row locked at that moment is skipped rather than waited for: the one
    transaction that locks a row we hold is our own, renewing or settling it.
    """
    ours = select(OutboxMessage.id).where(
        OutboxMessage.state == RowState.CLAIMED, OutboxMessage.claimed_by == instance_id
    )
    if session.get_bind().dialect.name == "postgresql":
        ours = ours.with_for_update(skip_locked=True)
    return session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ours.scalar_subquery()))
        .values(claimed_until=now + lease)
        .execution_options(synchronize_session=False)
    ).rowcount


def mark_sent(
    session: Session,
    row_id: int,
    *,
    instance_id: str,
    now: datetime,
    channel: str | None,
    ts: str | None,
    late: bool,
) -> OutboxMessage | None:
    """Settle as sent (the message at `channel`/`ts`; none for an escalation step, which became
    its messages); None if our claim was lost meanwhile."""
    row = owned(session, row_id, instance_id)
    if row is not None:
        settle_sent(row, now=now, channel=channel, ts=ts, late=late)
    return row


def settle_sent(
    row: OutboxMessage, *, now: datetime, channel: str | None, ts: str | None, late: bool
) -> None:
    """Settle a row we hold (`owned`, `owned_many`) as sent, its message at `channel`/`ts`."""
    row.state = RowState.SENT
    row.sent_at = now
    row.lateness_ms = round((now - row.due_at).total_seconds() * 1000)  # for /metrics
    row.message_channel = channel
    row.message_ts = ts
    row.late = late
    row.claimed_until = None
    row.last_error = None
    note(row, needs_check=False)


def release_for_retry(
    session: Session,
    row_id: int,
    *,
    instance_id: str,
    now: datetime,
    error: str,
    may_have_posted: bool = False,
    not_before: datetime | None = None,
    retry_at: datetime | None = None,
) -> OutboxMessage | None:
    """Back to pending with attempts+1 and next_attempt_at = now + backoff (or not_before, if
    later); exactly `retry_at` when given (the channel said when: a 429's Retry-After).

    `may_have_posted` (an ambiguous failure) makes the next attempt search the channel first.
    """
    row = owned(session, row_id, instance_id)
    if row is None:
        return None
    row.attempts = (row.attempts or 0) + 1
    if retry_at is None:
        retry_at = now + backoff(row.attempts)
        if not_before is not None and not_before > retry_at:
            retry_at = not_before
    _release(row, next_attempt_at=retry_at)
    row.last_error = error[:500]
    if may_have_posted:
        note(row, needs_check=True)
    return row


def _release(row: OutboxMessage, *, next_attempt_at: datetime | None) -> None:
    """Hand a claimed row back to pending, to be claimed again from `next_attempt_at`."""
    row.state = RowState.PENDING
    row.next_attempt_at = next_attempt_at
    row.claimed_by = None
    row.claimed_until = None


def defer(
    session: Session, row_id: int, *, instance_id: str, until: datetime
) -> OutboxMessage | None:
    """Back to pending without counting an attempt (waiting on something else, not failing)."""
    row = owned(session, row_id, instance_id)
    if row is None:
        return None
    _release(row, next_attempt_at=until)
    announce(session)  # another dispatcher may take it at once (this one is stopping)
    return row


def reschedule(
    session: Session, row_id: int, *, instance_id: str, due_at: datetime
) -> OutboxMessage | None:
    """Move a claimed row to a new due time (the rota changed: nobody is at work now)."""
    row = owned(session, row_id, instance_id)
    if row is None:
        return None
    original = dispatch_state(row).get("original_due_at") or row.due_at.isoformat()
    row.due_at = due_at
    _release(row, next_attempt_at=None)
    note(row, original_due_at=original)
    return row


def hand_to_next_channel(
    session: Session, row_id: int, *, instance_id: str, channel: str, error: str
) -> OutboxMessage | None:
    """`channel` cannot reach this row's person: note why, and forget the address it chose, so
    the row is composed again for their next channel (still claimed); None if the claim was
    lost."""
    row = owned(session, row_id, instance_id)
    if row is None:
        return None
    row.channel, row.address = None, None
    # Nothing of this row was sent on the next channel yet: no history to search there.
    tried = [[name, why] for name, why in unreachable_on(row).items() if name != channel]
    note(row, unreachable_on=[*tried, [channel, error]], needs_check=False)
    return row


def pass_over(
    session: Session, row_id: int, *, instance_id: str, recipient: str, error: str
) -> OutboxMessage | None:
    """No channel reaches this prompt's `recipient`: note them as passed over, and forget the
    recipient, channel and address chosen, so the row is composed again for the next in its
    chain (still claimed; nothing was sent to them); None if the claim was lost."""
    row = owned(session, row_id, instance_id)
    if row is None:
        return None
    row.recipient_id, row.channel, row.address = None, None, None
    passed = [[who, why] for who, why in passed_over(row).items() if who != recipient]
    note(row, passed_over=[*passed, [recipient, error]], unreachable_on=[], needs_check=False)
    return row


def mark_failed(
    session: Session, row_id: int, *, instance_id: str, now: datetime, error: str
) -> OutboxMessage | None:
    """Give up on a row after a permanent error (the caller raises an alert)."""
    row = owned(session, row_id, instance_id)
    if row is None:
        return None
    row.state = RowState.FAILED
    row.attempts = (row.attempts or 0) + 1
    row.claimed_until = None
    row.last_error = error[:500]
    return row


def mark_cancelled(
    session: Session, row_id: int, *, instance_id: str, reason: str
) -> OutboxMessage | None:
    """Cancel a claimed row that is no longer owed (its referral was closed, say)."""
    row = owned(session, row_id, instance_id)
    if row is None:
        return None
    row.state = RowState.CANCELLED
    row.claimed_until = None
    row.last_error = reason[:500]
    return row


def unfinished_card_before(session: Session, referral_id: str, row_id: int) -> bool:
    """Whether an earlier card row of the referral is still pending or in flight."""
    return (
        session.scalar(
            select(func.count(OutboxMessage.id)).where(
                OutboxMessage.referral_id == referral_id,
                OutboxMessage.kind == OutboxKind.CARD,
                OutboxMessage.id < row_id,
                OutboxMessage.state.in_((RowState.PENDING, RowState.CLAIMED)),
            )
        )
        or 0
    ) > 0
