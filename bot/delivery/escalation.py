"""Performing escalation steps, durably and exactly once, through the outbox (CONTRACT §3).

Each step is a `Prompt` row of kind `escalation` (detail `{"step", "prompt_id"}`, due_at = the
step's instant), so the dispatcher's atomic claiming and restart safety apply to it as to
prompts. A step is performed in three parts, so that Slack is called outside any transaction:

1. `plan_step` (read-only, in a transaction): re-reads the target, asks `rota.escalation.decide`
   and says what to send to whom, or that the row is to be cancelled or deferred;
2. `send_step` (no session): posts each message, first looking in Slack's history for it when
   an earlier attempt may have posted it (every message carries `handover_escalation` metadata
   naming the row id and the step);
3. `record_step` (in a transaction): writes the audit events, closes the row, marks a target
   still waiting `escalated` after the +120 step, and inserts the row of the next step, at its
   own instant even when that is already past (catch-up).

`perform_escalation_step` runs the three in one session, for tests and simple callers.
Functions here take a session and never commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from slack_sdk import WebClient
from sqlalchemy import inspect, select, update
from sqlalchemy.orm import Session

from bot.channels.slack import SlackMessenger, SlackRecipientError, SlackTransientError
from bot.delivery.kinds import (
    RESPONSE_KINDS,
    UNANSWERED_TARGET_STATES,
    OutboxKind,
    RowState,
    TargetState,
)
from bot.delivery.metadata import ESCALATION_EVENT_TYPE, escalation_tag
from bot.delivery.outbox import (
    dispatch_state,
    enqueue_card_refresh,
    first_claimed_at,
    load_detail,
    needs_check,
    note,
    owned,
)
from bot.models import OutboxMessage, Referral, ReferralStatus, Target
from bot.services import audit
from bot.settings import Settings
from handlers.blocks.escalation import (
    build_breach_message,
    build_channel_escalation_message,
    build_escalation_message,
    build_reminder_message,
    channel_label,
    recipient_label,
)
from rota.escalation import (
    BREACH,
    ESCALATE,
    ESCALATE_CHANNEL,
    LATE_AFTER,
    REMIND,
    STEPS,
    EscalationState,
    Step,
    decide,
    escalation_schedule,
    steps_before,
)
from rota.models import Team
from rota.plan import TargetError
from rota.planner import chain_for, is_at_work, parse_target
from rota.store import RotaStore
from rota.worktime import WorkingTime, working_time_for

logger = logging.getLogger(__name__)

ACTOR = "dispatcher"  # the log's actor for steps, as for the prompts the dispatcher sends

AUDIT_EVENTS = {
    REMIND: "reminder_sent",
    ESCALATE: "escalated",
    ESCALATE_CHANNEL: "escalated_channel",
    BREACH: "breach",
}

# Slack's clock and ours may differ a little; look this much further back in history
# (as the dispatcher does for prompts).
HISTORY_MARGIN = timedelta(minutes=10)

PlanAction = Literal["send", "cancel", "defer", "skip"]


@dataclass(frozen=True)
class OutgoingMessage:
    """One Slack message of a step: where it goes, what it says, and whom the log names."""

    channel: str  # a user ID (the bot's DM with them) or a channel ID
    text: str
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any]
    recipient: str  # person_id, or the channel ID for channel posts (the audit's recipient)
    via: str  # recipient | deputy | duty | manager | channel | ...
    dm_user: str | None = None  # set when `channel` is a user ID: history is in the DM


@dataclass(frozen=True)
class StepPlan:
    """What `plan_step` decided for one escalation row; a plain value, usable after the session."""

    row_id: int
    action: PlanAction
    step: Step | None = None
    due_at: datetime | None = None
    late: bool = False
    reason: str | None = None  # why a row is cancelled, deferred or skipped
    defer_to: datetime | None = None
    messages: tuple[OutgoingMessage, ...] = ()
    unreachable: tuple[tuple[str, str], ...] = ()  # (person_id, via) with no Slack user
    check_history: bool = False  # an earlier attempt may have posted some of the messages
    oldest: float | None = None  # unix seconds: no message of this row can be older


@dataclass(frozen=True)
class MessageResult:
    """How one message of a step went: posted (or found already posted), or refused."""

    recipient: str
    via: str
    channel: str | None = None
    ts: str | None = None
    error: str | None = None
    found_existing: bool = False

    @property
    def delivered(self) -> bool:
        """Whether the message is in Slack."""
        return self.ts is not None


@dataclass(frozen=True)
class StepOutcome:
    """What happened to an escalation row, and which step comes next (if any)."""

    row_id: int
    result: Literal["sent", "cancelled", "deferred", "skipped"]
    step: Step | None = None
    late: bool = False
    reason: str | None = None
    next_row_id: int | None = None
    next_step: Step | None = None
    next_due_at: datetime | None = None
    results: tuple[MessageResult, ...] = field(default_factory=tuple)

    @property
    def dispatch_outcome(self) -> str:
        """The dispatcher's name for this outcome (a DispatchStats counter, or "lost")."""
        return {"sent": "escalations", "deferred": "rescheduled", "skipped": "lost"}.get(
            self.result, self.result
        )


# Reading the rows ----------------------------------------------------------------------------


def _row_id(row: OutboxMessage | int) -> int:
    if isinstance(row, int):
        return row
    # The identity survives detachment, so a row from the claiming session can be passed.
    identity = inspect(row).identity
    return int(identity[0]) if identity else int(row.id)


def escalation_rows(session: Session, prompt: OutboxMessage) -> list[OutboxMessage]:
    """The escalation rows of one sent prompt, oldest first."""
    rows = session.scalars(
        select(OutboxMessage)
        .where(
            OutboxMessage.kind == OutboxKind.ESCALATION, OutboxMessage.target_id == prompt.target_id
        )
        .order_by(OutboxMessage.id)
    )
    return [r for r in rows if load_detail(r).get("prompt_id") == prompt.id]


def _sent_steps(session: Session, prompt: OutboxMessage) -> set[str]:
    return {
        str(load_detail(r).get("step"))
        for r in escalation_rows(session, prompt)
        if r.state == RowState.SENT
    }


def _state(
    prompt: OutboxMessage, target: Target, referral: Referral, done: frozenset[str]
) -> EscalationState:
    assert prompt.sent_at is not None
    return EscalationState(
        sent_at=prompt.sent_at,
        done=done,
        responded=target.state in RESPONSE_KINDS,
        referral_closed=referral.status == ReferralStatus.CLOSED,
        # Cancelled (or anything else no longer waiting for an answer): nothing more to chase.
        target_cancelled=(
            target.state not in UNANSWERED_TARGET_STATES and target.state not in RESPONSE_KINDS
        ),
    )


# Whom and what -------------------------------------------------------------------------------


def recipient_working_time(
    store: RotaStore, prompt: OutboxMessage, target: Target, tz: ZoneInfo
) -> WorkingTime:
    """The working time the prompt's steps are counted in (the one rule of rota.worktime)."""
    return working_time_for(store, prompt.recipient_id, target.spec, tz)


def _target_team(store: RotaStore, target: Target, recipient_id: str | None) -> Team | None:
    """The team whose manager answers for the target (the recipient's, for a role target)."""
    try:
        kind, ref = parse_target(target.spec)
    except TargetError:
        return None
    if kind == "team":
        return store.team(ref)
    person_id = ref if kind == "person" else recipient_id
    person = store.person(person_id) if person_id else None
    return store.team(person.team_id) if person is not None else None


def _active_manager(store: RotaStore, team: Team | None) -> str | None:
    if team is None or not team.manager_id:
        return None
    manager = store.person(team.manager_id)
    return manager.person_id if manager is not None and manager.active else None


def _recipient_team_manager(store: RotaStore, recipient_id: str | None) -> str | None:
    person = store.person(recipient_id) if recipient_id else None
    return _active_manager(store, store.team(person.team_id)) if person is not None else None


def escalation_people(
    store: RotaStore, prompt: OutboxMessage, target: Target, now: datetime, tz: ZoneInfo
) -> list[tuple[str, str]]:
    """(person_id, via) for everyone the escalate step reaches, never the recipient: the people
    after the recipient in the target's chain who are at work now, in chain order, then the
    recipient's team manager whether at work or not.

    When the recipient is no longer in the chain (the rota changed since the prompt), everyone
    in the chain at work now. A team channel is never escalated to: the channel step is
    HANDOVER_ESCALATION_CHANNEL's.
    """
    recipient = prompt.recipient_id
    try:
        links = chain_for(store, target.spec, now)
    except TargetError:
        # The target left the rota since it was prompted; its managers are still told.
        logger.warning("escalation: target %s is no longer in the rota", target.spec)
        links = []
    position = next((i for i, link in enumerate(links) if link.recipient == recipient), None)
    # Whoever was asked before the recipient was passed over (on leave, off work): not them.
    after = links if position is None else links[position + 1 :]
    people: list[tuple[str, str]] = []
    seen = {recipient}
    for link in after:
        if link.via == "channel" or link.recipient in seen:
            continue
        if not is_at_work(store, link.recipient, now, tz):
            continue
        seen.add(link.recipient)
        people.append((link.recipient, link.via))
    manager = _recipient_team_manager(store, recipient)
    if manager is None and (recipient is None or store.person(recipient) is None):
        # A team channel was asked: its team's manager answers for it.
        manager = _active_manager(store, _target_team(store, target, None))
    if manager is not None and manager not in seen:
        people.append((manager, "manager"))
    return people


def escalation_channel(settings: Settings) -> str | None:
    """HANDOVER_ESCALATION_CHANNEL, else (logged) the EDT channel, else None."""
    if settings.escalation_channel:
        return settings.escalation_channel
    if settings.edt_channel:
        logger.warning("HANDOVER_ESCALATION_CHANNEL is not set; escalating to the EDT channel")
        return settings.edt_channel
    logger.error("neither HANDOVER_ESCALATION_CHANNEL nor HANDOVER_EDT_CHANNEL is set")
    return None


def _person_label(store: RotaStore, person_id: str) -> str:
    person = store.person(person_id)
    return recipient_label(person_id, person.slack_user_id if person is not None else None)


def _asked(store: RotaStore, prompt: OutboxMessage) -> str:
    person = store.person(prompt.recipient_id) if prompt.recipient_id else None
    if person is not None:
        return recipient_label(person.person_id, person.slack_user_id)
    channel = prompt.address or prompt.message_channel or prompt.recipient_id
    return channel_label(channel) if channel else recipient_label(None)


def _dm(
    store: RotaStore, person_id: str, via: str, message: dict[str, Any], metadata: dict[str, Any]
) -> OutgoingMessage | None:
    person = store.person(person_id)
    user = person.slack_user_id if person is not None else None
    if not user:
        return None
    return OutgoingMessage(
        channel=user,
        text=message["text"],
        blocks=message["blocks"],
        metadata=metadata,
        recipient=person_id,
        via=via,
        dm_user=user,
    )


def _post(channel: str, message: dict[str, Any], metadata: dict[str, Any]) -> OutgoingMessage:
    return OutgoingMessage(
        channel=channel,
        text=message["text"],
        blocks=message["blocks"],
        metadata=metadata,
        recipient=channel,
        via="channel",
    )


def _reminder(
    store: RotaStore, prompt: OutboxMessage, message: dict[str, Any], metadata: dict[str, Any]
) -> OutgoingMessage | None:
    recipient = prompt.recipient_id or prompt.address or ""
    # The conversation the prompt went to, so the reminder sits right under it.
    if prompt.message_channel:
        return OutgoingMessage(
            channel=prompt.message_channel,
            text=message["text"],
            blocks=message["blocks"],
            metadata=metadata,
            recipient=recipient,
            via="recipient",
        )
    dm = _dm(store, recipient, "recipient", message, metadata) if recipient else None
    if dm is not None:
        return dm
    if prompt.address:
        return _post(prompt.address, message, metadata)
    return None


# Planning ------------------------------------------------------------------------------------


def _history_window(row: OutboxMessage) -> tuple[bool, float | None]:
    """Whether an earlier attempt may have posted part of the step, and since when to look."""
    # A multi-message step that failed part-way was released with attempts + 1; an abandoned
    # claim is marked needs_check: either way some messages may be in Slack already.
    check = needs_check(row) or (row.attempts or 0) > 0
    starts = [first_claimed_at(row)]
    wall = dispatch_state(row).get("first_claimed_wall")
    if wall:
        starts.append(datetime.fromisoformat(wall))
    known = [s for s in starts if s is not None]
    return check, (min(known) - HISTORY_MARGIN).timestamp() if known else None


def plan_step(
    session: Session, row: OutboxMessage | int, *, now: datetime, settings: Settings
) -> StepPlan:
    """What performing this escalation row means at `now`; reads only, writes nothing."""
    row_id = _row_id(row)
    current = session.get(OutboxMessage, row_id)
    if current is None or current.kind != OutboxKind.ESCALATION:
        return StepPlan(row_id, "skip", reason="not an escalation row")
    if current.state not in (RowState.PENDING, RowState.CLAIMED):
        return StepPlan(row_id, "skip", reason=f"row already {current.state}")
    detail = load_detail(current)
    step = detail.get("step")
    prompt = session.get(OutboxMessage, detail.get("prompt_id") or 0)
    target = session.get(Target, current.target_id) if current.target_id else None
    referral = session.get(Referral, current.referral_id)
    if step not in STEPS:
        return StepPlan(row_id, "cancel", reason="unknown step")
    if prompt is None or target is None or referral is None:
        return StepPlan(row_id, "cancel", step=step, reason="prompt or target missing")
    if prompt.state != RowState.SENT or prompt.sent_at is None:
        return StepPlan(row_id, "cancel", step=step, reason=f"prompt {prompt.state}")
    sent = _sent_steps(session, prompt)
    if step in sent:
        # A second row for a step already performed (e.g. scheduled twice): never send twice.
        return StepPlan(row_id, "cancel", step=step, reason="step already performed")

    store = RotaStore(session)
    working_time = recipient_working_time(store, prompt, target, settings.timezone)
    state = _state(prompt, target, referral, steps_before(step) | sent)
    decision = decide(state, now=now, working_time=working_time, policy=settings.escalation)
    if decision.action == "stop":
        return StepPlan(row_id, "cancel", step=step, reason=decision.reason)
    if not decision.performs:
        # The rota changed since the row was written (a new closure, other hours): the step
        # now falls later. Wait for it rather than escalate early.
        return StepPlan(row_id, "defer", step=step, reason="rota changed", defer_to=decision.due_at)

    schedule = dict(escalation_schedule(prompt.sent_at, working_time, settings.escalation))
    messages, unreachable = _step_messages(
        store, step, prompt, target, referral, schedule, row_id=row_id, now=now, settings=settings
    )
    check, oldest = _history_window(current)
    return StepPlan(
        row_id,
        "send",
        step=step,
        due_at=current.due_at,
        # Late against the instant the row was written for, which the log shows.
        late=now - current.due_at > LATE_AFTER,
        messages=tuple(messages),
        unreachable=tuple((p, via) for p, via in unreachable if p),
        check_history=check,
        oldest=oldest,
    )


def _step_messages(
    store: RotaStore,
    step: str,
    prompt: OutboxMessage,
    target: Target,
    referral: Referral,
    schedule: dict[Step, datetime],
    *,
    row_id: int,
    now: datetime,
    settings: Settings,
) -> tuple[list[OutgoingMessage], list[tuple[str, str]]]:
    """The messages of one step, and the people who should get one but have no Slack user."""
    assert prompt.sent_at is not None
    tz = settings.timezone
    metadata = escalation_tag(referral.referral_id, prompt.id, row_id, step).metadata
    asked = _asked(store, prompt)
    messages: list[OutgoingMessage] = []
    unreachable: list[tuple[str, str]] = []

    def dm(person_id: str, via: str, message: dict[str, Any]) -> None:
        outgoing = _dm(store, person_id, via, message, metadata)
        if outgoing is None:
            unreachable.append((person_id, via))
        else:
            messages.append(outgoing)

    if step == REMIND:
        message = build_reminder_message(
            referral, prompt.id, sent_at=prompt.sent_at, respond_by=schedule[BREACH], tz=tz
        )
        reminder = _reminder(store, prompt, message, metadata)
        if reminder is None:
            unreachable.append((prompt.recipient_id or "", "recipient"))
        else:
            messages.append(reminder)
    elif step == ESCALATE:
        for person_id, via in escalation_people(store, prompt, target, now, tz):
            message = build_escalation_message(
                referral,
                prompt.id,
                target=target.spec,
                asked=asked,
                sent_at=prompt.sent_at,
                respond_by=schedule[BREACH],
                via=via,
                tz=tz,
            )
            dm(person_id, via, message)
    elif step == ESCALATE_CHANNEL:
        channel = escalation_channel(settings)
        if channel is not None:
            told = [
                _person_label(store, p)
                for p, _ in escalation_people(store, prompt, target, now, tz)
            ]
            message = build_channel_escalation_message(
                referral,
                target=target.spec,
                asked=asked,
                sent_at=prompt.sent_at,
                escalated_to=told,
                breach_at=schedule[BREACH],
                tz=tz,
            )
            messages.append(_post(channel, message, metadata))
    else:
        message = build_breach_message(
            referral,
            target=target.spec,
            asked=asked,
            sent_at=prompt.sent_at,
            breach_at=schedule[BREACH],
            tz=tz,
        )
        channel = escalation_channel(settings)
        if channel is not None:
            messages.append(_post(channel, message, metadata))
        manager = _active_manager(store, _target_team(store, target, prompt.recipient_id))
        if manager is not None and manager != prompt.recipient_id:
            dm(manager, "manager", message)
    return messages, unreachable


# Sending -------------------------------------------------------------------------------------


def send_step(
    messenger: SlackMessenger,
    plan: StepPlan,
    *,
    check_history: bool | None = None,
    oldest: float | None = None,
) -> list[MessageResult]:
    """Post the plan's messages, outside any transaction; a message an earlier attempt already
    posted is found in Slack's history instead of posted again.

    `check_history` and `oldest` (unix seconds) default to the plan's. A recipient Slack refuses
    is noted in its result and the others still go. Transient and auth errors propagate so the
    whole row is retried; once part of the step is in Slack, a transient error is re-raised as
    ambiguous, so the retry searches history first.
    """
    results: list[MessageResult] = []
    if plan.action != "send" or plan.step is None:
        return results
    check = plan.check_history if check_history is None else check_history
    since = plan.oldest if oldest is None else oldest
    for message in plan.messages:
        try:
            result = _send_one(messenger, plan, message, check=check, since=since)
        except SlackRecipientError as exc:
            result = MessageResult(message.recipient, message.via, error=exc.error)
        except SlackTransientError as exc:
            if not results or exc.ambiguous:
                raise
            raise SlackTransientError(
                str(exc),
                method=exc.method,
                error=exc.error,
                ambiguous=True,
                retry_after=exc.retry_after,
            ) from exc
        results.append(result)
    return results


def _send_one(
    messenger: SlackMessenger,
    plan: StepPlan,
    message: OutgoingMessage,
    *,
    check: bool,
    since: float | None,
) -> MessageResult:
    if check:
        channel = messenger.open_dm(message.dm_user) if message.dm_user else message.channel
        found = messenger.find_message(
            channel,
            event_type=ESCALATION_EVENT_TYPE,
            payload_match={"row_id": plan.row_id, "step": plan.step},
            oldest=since,
        )
        if found is not None:
            logger.info("escalation row %s: %s already in Slack", plan.row_id, message.recipient)
            return MessageResult(
                message.recipient,
                message.via,
                channel=found.channel,
                ts=found.ts,
                found_existing=True,
            )
    posted = messenger.post_message(
        message.channel, text=message.text, blocks=message.blocks, metadata=message.metadata
    )
    return MessageResult(message.recipient, message.via, channel=posted.channel, ts=posted.ts)


# Recording -----------------------------------------------------------------------------------


def _set_detail(row: OutboxMessage, **changes: Any) -> None:
    detail = load_detail(row)
    detail.update(changes)
    row.detail = json.dumps(detail, sort_keys=True)


def _close_row(row: OutboxMessage, state: str, now: datetime) -> None:
    row.state = state
    row.claimed_by = None
    row.claimed_until = None
    if state == RowState.SENT:
        row.sent_at = now
        row.last_error = None
        note(row, needs_check=False)


def _insert_step_row(
    session: Session, prompt: OutboxMessage, step: str, due_at: datetime
) -> OutboxMessage:
    row = OutboxMessage(
        referral_id=prompt.referral_id,
        target_id=prompt.target_id,
        kind=OutboxKind.ESCALATION,
        recipient_id=prompt.recipient_id,
        due_at=due_at,
        state=RowState.PENDING,
        attempts=0,
        detail=json.dumps({"prompt_id": prompt.id, "step": step}, sort_keys=True),
    )
    session.add(row)
    session.flush()
    return row


def _current_row(session: Session, row_id: int, instance_id: str | None) -> OutboxMessage | None:
    if instance_id is not None:
        # Compare-and-set on the claim: a dispatcher whose lease ran out records nothing.
        return owned(session, row_id, instance_id)
    current = session.get(OutboxMessage, row_id, populate_existing=True)
    return (
        current
        if current is not None and current.state in (RowState.PENDING, RowState.CLAIMED)
        else None
    )


def record_step(
    session: Session,
    row: OutboxMessage | int,
    plan: StepPlan,
    results: Sequence[MessageResult],
    *,
    now: datetime,
    settings: Settings,
    instance_id: str | None = None,
) -> StepOutcome:
    """Write what a step did: audit events, the row's final state, and the next step's row.

    With `instance_id`, only while that dispatcher still holds the row's claim.
    """
    row_id = _row_id(row)
    current = _current_row(session, row_id, instance_id)
    if plan.action == "skip" or current is None:
        return StepOutcome(row_id, "skipped", step=plan.step, reason=plan.reason or "claim lost")
    if plan.action == "cancel":
        _set_detail(current, cancelled=plan.reason)
        current.last_error = (plan.reason or "cancelled")[:500]
        _close_row(current, RowState.CANCELLED, now)
        session.flush()
        return StepOutcome(row_id, "cancelled", step=plan.step, reason=plan.reason)
    if plan.action == "defer":
        assert plan.defer_to is not None
        current.state = RowState.PENDING
        current.due_at = plan.defer_to
        current.next_attempt_at = None
        current.claimed_by = None
        current.claimed_until = None
        session.flush()
        return StepOutcome(
            row_id,
            "deferred",
            step=plan.step,
            reason=plan.reason,
            next_row_id=row_id,
            next_step=plan.step,
            next_due_at=plan.defer_to,
        )

    prompt = session.get(OutboxMessage, load_detail(current).get("prompt_id") or 0)
    target = session.get(Target, current.target_id) if current.target_id else None
    referral = session.get(Referral, current.referral_id)
    assert prompt is not None and target is not None and referral is not None
    assert plan.step is not None
    _audit_step(session, current, prompt, target, plan, results, now=now, settings=settings)

    delivered = [r for r in results if r.delivered]
    if delivered:
        current.message_channel, current.message_ts = delivered[0].channel, delivered[0].ts
    current.late = plan.late
    _set_detail(
        current,
        results=[
            {"recipient": r.recipient, "via": r.via, "delivered": r.delivered, "error": r.error}
            for r in results
        ],
    )
    _close_row(current, RowState.SENT, now)
    if plan.step == ESCALATE:
        _mark_escalated(session, target, referral, now=now, settings=settings)
    session.flush()

    # Re-read the target: a response may have come in while the messages were going out.
    session.refresh(target)
    session.refresh(referral)
    store = RotaStore(session)
    working_time = recipient_working_time(store, prompt, target, settings.timezone)
    done = steps_before(plan.step) | _sent_steps(session, prompt) | {plan.step}
    state = _state(prompt, target, referral, frozenset(done))
    upcoming = decide(state, now=now, working_time=working_time, policy=settings.escalation)
    if upcoming.action == "stop" or upcoming.step is None or upcoming.due_at is None:
        return StepOutcome(row_id, "sent", step=plan.step, late=plan.late, results=tuple(results))
    # At its own instant even if already past: the dispatcher performs it at once, marked late.
    following = _insert_step_row(session, prompt, upcoming.step, upcoming.due_at)
    return StepOutcome(
        row_id,
        "sent",
        step=plan.step,
        late=plan.late,
        next_row_id=following.id,
        next_step=upcoming.step,
        next_due_at=upcoming.due_at,
        results=tuple(results),
    )


def _mark_escalated(
    session: Session, target: Target, referral: Referral, *, now: datetime, settings: Settings
) -> None:
    """The +120 step was performed: a target still only prompted is now `escalated`, which the
    card and the App Home show. Compare-and-set, so a response recorded meanwhile stands."""
    changed = session.execute(
        update(Target)
        .where(Target.id == target.id, Target.state == TargetState.PROMPTED)
        .values(state=TargetState.ESCALATED)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(target)
    if changed and (referral.card_channel or settings.edt_channel):
        enqueue_card_refresh(session, referral.referral_id, now)


def _audit_step(
    session: Session,
    row: OutboxMessage,
    prompt: OutboxMessage,
    target: Target,
    plan: StepPlan,
    results: Sequence[MessageResult],
    *,
    now: datetime,
    settings: Settings,
) -> None:
    assert plan.step is not None and plan.due_at is not None
    event = AUDIT_EVENTS[plan.step]
    version = RotaStore(session).current_rota_version()
    base = {
        "step": plan.step,
        "due_at": plan.due_at.astimezone(settings.timezone).isoformat(),
        "late": plan.late,
        "prompt_id": prompt.id,
        "row_id": row.id,
    }

    def log(recipient: str | None, **extra: Any) -> None:
        audit.record(
            session,
            event,
            at=now,
            referral_id=row.referral_id,
            actor=ACTOR,
            recipient=recipient,
            target=target.spec,
            detail={**base, **extra},
            rota_version=version,
        )

    outcomes = [_outcome(r.recipient, r.via, r.delivered, r.error) for r in results]
    outcomes += [_outcome(p, via, False, "no_slack_user") for p, via in plan.unreachable]
    if plan.step == ESCALATE:
        if not outcomes:
            log(None, delivered=False, error="nobody else in the chain")
        for outcome in outcomes:
            log(outcome.pop("recipient"), **outcome)
    elif plan.step == BREACH:
        channel = next((o["recipient"] for o in outcomes if o["via"] == "channel"), None)
        log(channel, notified=outcomes or None, **({} if outcomes else _NO_CHANNEL))
    elif outcomes:
        outcome = outcomes[0]
        log(outcome.pop("recipient"), **outcome)
    else:
        recipient = prompt.recipient_id if plan.step == REMIND else None
        log(recipient, **_NO_CHANNEL)


_NO_CHANNEL = {"delivered": False, "error": "no channel to post in"}


def _outcome(recipient: str, via: str, delivered: bool, error: str | None) -> dict[str, Any]:
    outcome: dict[str, Any] = {"recipient": recipient, "via": via, "delivered": delivered}
    if error:
        outcome["error"] = error
    return outcome


# Scheduling and the one-call path -------------------------------------------------------------


def schedule_escalation(
    session: Session, prompt: OutboxMessage, *, now: datetime, settings: Settings
) -> OutboxMessage | None:
    """Insert the first escalation step of a prompt just confirmed sent (idempotent).

    Returns the step's row (an existing one when called again), or None when nothing is to be
    escalated (the target already answered, the referral is closed).
    """
    if prompt.kind != OutboxKind.PROMPT:
        raise ValueError(f"only prompts escalate, not {prompt.kind!r} rows")
    if prompt.state != RowState.SENT or prompt.target_id is None:
        raise ValueError("escalation is scheduled only for a sent prompt of a target")
    existing = escalation_rows(session, prompt)
    if existing:
        return existing[0]
    target = session.get(Target, prompt.target_id)
    referral = session.get(Referral, prompt.referral_id)
    assert target is not None and referral is not None
    if prompt.sent_at is None:
        prompt.sent_at = now
    store = RotaStore(session)
    working_time = recipient_working_time(store, prompt, target, settings.timezone)
    state = _state(prompt, target, referral, frozenset())
    first = decide(state, now=now, working_time=working_time, policy=settings.escalation)
    if first.action == "stop" or first.step is None or first.due_at is None:
        return None
    return _insert_step_row(session, prompt, first.step, first.due_at)


def perform_escalation_step(
    session: Session,
    client: WebClient,
    row: OutboxMessage | int,
    *,
    now: datetime,
    settings: Settings,
    check_history: bool | None = None,
    instance_id: str | None = None,
) -> StepOutcome:
    """Plan, send and record one claimed escalation row in this session (Slack calls inside).

    `check_history` defaults to the row's own record: whether an earlier attempt may have
    posted (its claim was abandoned, or it was tried before).
    """
    plan = plan_step(session, row, now=now, settings=settings)
    results = send_step(SlackMessenger(client), plan, check_history=check_history)
    return record_step(
        session, row, plan, results, now=now, settings=settings, instance_id=instance_id
    )
