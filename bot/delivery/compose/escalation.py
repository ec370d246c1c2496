"""Composing escalation rows: a step that falls due, and each message it becomes.

A step row (kind `escalation`) asks `rota.escalation.decide` whether its step is still owed now:
cancelled (answered, closed), moved later (the rota changed), or performed. Performing it sends
nothing itself: it becomes one `step_message` row per message (the reminder under the prompt,
each escalation DM, the channel post, the breach post and the manager's DM), marks the target
escalated after the +120 step, and schedules the next step. Each message row is then composed
like any other: resolved to an address, sent once, found in history after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.channels.base import Message
from bot.delivery import escalation, outbox
from bot.delivery.compose.base import (
    Composed,
    DeliveryContext,
    NeedsAddress,
    Settled,
    cancel,
    delivery_of,
    fail,
    reach_person,
)
from bot.delivery.kinds import Outcome, RowState
from bot.delivery.metadata import escalation_tag
from bot.delivery.reads import store_of, target_of
from bot.models import OutboxMessage, Referral, Target
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
    decide,
    escalation_schedule,
    steps_before,
)
from rota.models import Person
from rota.store import RotaStore
from rota.worktime import working_time_for


@dataclass(frozen=True)
class _Planned:
    """One message of a step: to a person (resolved when sent) or to a conversation."""

    recipient_id: str | None
    address: str | None
    via: str
    extra: dict[str, Any] = field(default_factory=dict)


def _chased(
    session: Session, row: OutboxMessage
) -> tuple[dict[str, Any], Any, OutboxMessage | None, Target | None]:
    """A step row's (or a step message's) detail, step, the prompt it chases and its target."""
    info = outbox.load_detail(row)
    prompt = session.get(OutboxMessage, info.get("prompt_id") or 0)
    target = target_of(session, row)
    return info, info.get("step"), prompt, target


def compose_step(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Settled:
    """Perform the step if it is owed now: it becomes its message rows."""
    _, step, prompt, target = _chased(session, row)
    if step not in STEPS:
        return cancel(ctx, session, row, "unknown step")
    if prompt is None or target is None:
        return cancel(ctx, session, row, "prompt or target missing", step)
    if prompt.state != RowState.SENT or prompt.sent_at is None:
        return cancel(ctx, session, row, f"prompt {prompt.state}", step)
    done = escalation.performed_steps(session, prompt)
    if step in done:
        # A second row for a step already performed (e.g. scheduled twice): never send twice.
        return cancel(ctx, session, row, "step already performed", step)

    settings = ctx.settings
    store = store_of(session)
    working_time = working_time_for(store, prompt.recipient_id, target.spec, settings.timezone)
    state = escalation.escalation_state(prompt, target, referral, steps_before(step) | done)
    decision = decide(
        state, now=now, working_time=working_time, policy=settings.policy_for(referral.urgency)
    )
    if decision.action == "stop":
        return cancel(ctx, session, row, decision.reason or "stopped", step)
    if not decision.performs:
        # The rota changed since the row was written (a new closure, other hours): the step
        # now falls later. Wait for it rather than escalate early.
        assert decision.due_at is not None
        outbox.reschedule(session, row.id, instance_id=ctx.instance_id, due_at=decision.due_at)
        return Settled(
            Outcome.RESCHEDULED, step=step, reason="rota changed", next_due_at=decision.due_at
        )

    # Late against the instant the row was written for, which the log shows.
    late = now - row.due_at > LATE_AFTER
    schedule = dict(
        escalation_schedule(prompt.sent_at, working_time, settings.policy_for(referral.urgency))
    )
    tz = settings.timezone
    step_info = {
        "step": step,
        "prompt_id": prompt.id,
        "step_row_id": row.id,
        "due_at": row.due_at.astimezone(tz).isoformat(),
        "late": late,
        "breach_at": schedule[BREACH].astimezone(tz).isoformat(),
    }
    planned = _plan_messages(
        ctx, store, step, prompt, target, now, _escalation_reached(session, prompt)
    )
    for message in planned:
        outbox.enqueue_step_message(
            session,
            row,
            recipient_id=message.recipient_id,
            address=message.address,
            **{k: v for k, v in step_info.items() if k != "step_row_id"},
            via=message.via,
            **message.extra,
        )
    if not planned:
        escalation.record_step_without_messages(session, row, target, step_info, now=now)
    if step == ESCALATE:
        escalation.mark_escalated(session, target, referral, now=now, settings=settings)
    outbox.mark_sent(
        session, row.id, instance_id=ctx.instance_id, now=now, channel=None, ts=None, late=late
    )
    following = escalation.schedule_next_step(
        session,
        prompt,
        target,
        referral,
        frozenset(steps_before(step) | done | {step}),
        now=now,
        settings=settings,
    )
    return Settled(
        Outcome.PERFORMED,
        step=step,
        late=late,
        next_due_at=following.due_at if following is not None else None,
    )


def store_has(session: Session, person_id: str) -> bool:
    """Whether `person_id` names a person of the rota (not a room)."""
    return session.get(Person, person_id) is not None


def _asked(store: RotaStore, prompt: OutboxMessage) -> str:
    """Who the prompt asked, as the step's messages name them."""
    person = store.person(prompt.recipient_id) if prompt.recipient_id else None
    if person is not None:
        return escalation.person_label(store, person.person_id)
    room = prompt.address or prompt.message_channel or prompt.recipient_id
    return channel_label(room) if room else recipient_label(None)


def _escalation_reached(session: Session, prompt: OutboxMessage) -> list[tuple[str, bool]] | None:
    """Whom the prompt's escalation step (+120) was for, each with whether it reached them
    (a message still retrying has not); None when that step was not performed."""
    for step_row in escalation.escalation_rows(session, prompt):
        if outbox.load_detail(step_row).get("step") == ESCALATE and step_row.state == RowState.SENT:
            return [
                (message.recipient_id, message.state == RowState.SENT)
                for message in escalation.step_messages(session, step_row)
                if message.recipient_id
            ]
    return None


def _plan_messages(
    ctx: DeliveryContext,
    store: RotaStore,
    step: str,
    prompt: OutboxMessage,
    target: Target,
    now: datetime,
    reached: list[tuple[str, bool]] | None,
) -> list[_Planned]:
    """The messages of one step, in the order they go."""
    tz = ctx.settings.timezone
    asked = {"asked": _asked(store, prompt)}
    if step == REMIND:
        # To the person asked, as any message to them (by their channel: a Slack DM is the
        # prompt's conversation; an email is filed under the prompt's); a room asked is
        # reminded where the prompt went.
        recipient = prompt.recipient_id
        if recipient and store.person(recipient) is not None:
            return [_Planned(recipient, None, "recipient")]
        if prompt.message_channel and prompt.channel in (None, ctx.channels.for_rooms().name):
            return [_Planned(recipient, prompt.message_channel, "recipient")]
        return [_Planned(recipient, prompt.address, "recipient")] if prompt.address else []
    if step == ESCALATE:
        return [
            _Planned(person_id, None, via, asked)
            for person_id, via in escalation.escalation_people(store, prompt, target, now, tz)
        ]
    room = escalation.escalation_channel(ctx.settings)
    if step == ESCALATE_CHANNEL:
        if room is None:
            return []
        if reached is None:
            # No escalation step was performed (the policy has none): who it would reach now.
            people = escalation.escalation_people(store, prompt, target, now, tz)
            reached = [(person_id, True) for person_id, _ in people]
        told = [escalation.person_label(store, p) for p, delivered in reached if delivered]
        # Those the prompt passed over (nobody could reach them), then the escalation's: by
        # their rota id, as a mention of an account Slack does not know would be no use.
        missed = [recipient_label(p) for p in outbox.passed_over(prompt)] + [
            recipient_label(p) for p, delivered in reached if not delivered
        ]
        extra = {**asked, "escalated_to": told, "not_reached": missed}
        return [_Planned(None, room, "channel", extra)]
    planned = [_Planned(None, room, "channel", asked)] if room is not None else []
    team = escalation.target_team(store, target, prompt.recipient_id)
    manager = escalation.active_manager(store, team)
    if manager is not None and manager != prompt.recipient_id:
        planned.append(_Planned(manager, None, "manager", asked))
    return planned


def compose_step_message(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Composed:
    """One message of a performed step, to its conversation or to its person."""
    info, step, prompt, target = _chased(session, row)
    if step not in STEPS or prompt is None or prompt.sent_at is None or target is None:
        settled = fail(ctx, session, row, now, "prompt or target missing")
        escalation.record_step_message(session, row, delivered=False, error=settled.reason, now=now)
        return settled
    if row.address:
        # A conversation (a room, the prompt's DM), or the address an earlier attempt chose.
        channel, address = ctx.channels.named(row.channel), row.address
    else:
        assert row.recipient_id is not None
        reached = reach_person(ctx, session, row, row.recipient_id)
        if isinstance(reached, NeedsAddress):
            return reached
        channel, address = reached
    row.channel, row.address = channel.name, address
    tz = ctx.settings.timezone
    breach_at = datetime.fromisoformat(info["breach_at"])
    asked = info.get("asked", "")
    if step == REMIND:
        built = build_reminder_message(
            referral, prompt.id, sent_at=prompt.sent_at, respond_by=breach_at, tz=tz
        )
    elif step == ESCALATE:
        built = build_escalation_message(
            referral,
            prompt.id,
            target=target.spec,
            asked=asked,
            sent_at=prompt.sent_at,
            respond_by=breach_at,
            via=info.get("via") or "",
            tz=tz,
        )
    elif step == ESCALATE_CHANNEL:
        built = build_channel_escalation_message(
            referral,
            target=target.spec,
            asked=asked,
            sent_at=prompt.sent_at,
            escalated_to=list(info.get("escalated_to") or []),
            not_reached=list(info.get("not_reached") or []),
            breach_at=breach_at,
            tz=tz,
        )
    else:
        built = build_breach_message(
            referral,
            target=target.spec,
            asked=asked,
            sent_at=prompt.sent_at,
            breach_at=breach_at,
            tz=tz,
        )
    tag = escalation_tag(referral.referral_id, prompt.id, row.id, step)
    asks = step in (REMIND, ESCALATE)  # these carry the response buttons
    message = Message(built["text"], built["blocks"], tag, respond_by=breach_at if asks else None)
    # A person of the rota (a room asked is reminded in the room, as no one's).
    person = row.recipient_id if row.recipient_id and store_has(session, row.recipient_id) else None
    return delivery_of(row, channel, address, message, person=person)
