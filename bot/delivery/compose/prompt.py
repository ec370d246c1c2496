"""Composing a prompt row: who is asked now, by which channel, and with what respond-by time.

The recipient is decided at send time, the first in the target's chain at work now (the rota
may have changed since intake), passing over anyone no channel could reach for this prompt
(`failures.Failures.pass_over`). Nobody at work any more: the prompt is held until someone is,
or, with nobody within 7 days (or nobody left who can be reached), the target is unroutable
and the on-call holders are alerted.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from bot.channels.base import Message
from bot.delivery import outbox
from bot.delivery.compose.alert import raise_alert
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
from bot.delivery.kinds import ACTOR, ANSWERED_TARGET_STATES, OutboxKind, Outcome, TargetState
from bot.delivery.metadata import prompt_tag
from bot.delivery.reads import recipient_at, store_of, target_of
from bot.models import OutboxMessage, Referral, Target
from bot.services import audit
from handlers.blocks.prompt import build_prompt_message
from rota.escalation import escalation_schedule
from rota.escalation import respond_by as respond_by_of
from rota.planner import TargetError, plan_referral
from rota.store import RotaStore
from rota.worktime import working_time_for

logger = logging.getLogger(__name__)

# Target states after which a held prompt is no longer owed.
FINISHED_TARGET_STATES = frozenset({*ANSWERED_TARGET_STATES, TargetState.CANCELLED})


def cancel_row(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, now: datetime, reason: str
) -> Settled:
    """Cancel a row no longer owed; a prompt's cancellation is logged."""
    settled = cancel(ctx, session, row, reason)
    if row.kind == OutboxKind.PROMPT:
        target = target_of(session, row)
        audit.record(
            session,
            "prompt_cancelled",
            at=now,
            referral_id=row.referral_id,
            actor=ACTOR,
            target=target.spec if target else None,
            detail={"reason": reason, "prompt_id": row.id},
        )
    return settled


def compose_prompt(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Composed:
    """The prompt to the first in the target's chain at work now."""
    target = target_of(session, row)
    if target is None:
        return fail(ctx, session, row, now, "no target")
    if target.state in FINISHED_TARGET_STATES:
        return cancel_row(ctx, session, row, now, f"target already {target.state}")
    check = outbox.needs_check(row)
    store = store_of(session)
    tz = ctx.settings.timezone
    passed = outbox.passed_over(row)
    if check and row.recipient_id and row.address:
        # An earlier attempt chose a recipient: look where it would have posted.
        recipient, via = row.recipient_id, outbox.dispatch_state(row).get("via")
        channel, address = ctx.channels.named(row.channel), row.address
    else:
        link = recipient_at(session, target.spec, now, tz, excluding=passed)
        if link is None:
            return _hold_or_give_up(ctx, session, store, row, referral, target, now, passed)
        recipient, via = link.recipient, link.via
        if via == "channel":
            channel, address = ctx.channels.for_rooms(), recipient
        else:
            row.recipient_id = recipient  # named in the alert if they cannot be found
            # Written with its channel and address below: one UPDATE of the row, not two.
            with session.no_autoflush:
                reached = reach_person(ctx, session, row, recipient)
            if isinstance(reached, NeedsAddress):
                return reached
            channel, address = reached
    # Remember the choice, so a later check searches the same place.
    row.recipient_id, row.channel, row.address = recipient, channel.name, address
    outbox.note(row, via=via)
    working_time = working_time_for(store, recipient, target.spec, tz)
    policy = ctx.settings.policy_for(referral.urgency)
    urgent = referral.urgency == "urgent"
    respond_by = respond_by_of(now, working_time, policy, urgent=urgent)
    built = build_prompt_message(
        referral,
        row.id,
        due_at=row.due_at,
        respond_by=respond_by,
        tz=tz,
        via=via,
        target=target.spec,
        steps=escalation_schedule(now, working_time, policy),
    )
    message = Message(
        built["text"],
        built["blocks"],
        prompt_tag(referral.referral_id, row.id),
        respond_by=respond_by,
    )
    return delivery_of(
        row,
        channel,
        address,
        message,
        check_history=check,
        person=recipient if via != "channel" else None,
        recipient=recipient,
        target=target.spec,
        via=via,
        log_detail={
            "respond_by": respond_by.astimezone(tz).isoformat(),
            **({"passed_over": [*passed]} if passed else {}),
        },
    )


def _hold_or_give_up(
    ctx: DeliveryContext,
    session: Session,
    store: RotaStore,
    row: OutboxMessage,
    referral: Referral,
    target: Target,
    now: datetime,
    passed: dict[str, str],
) -> Settled:
    """Nobody in the chain is at work now (the rota changed), or nobody left that can be
    reached (`passed`: those no channel reached): hold until someone else is at work."""
    tz = ctx.settings.timezone
    try:
        plan = plan_referral(store, [target.spec], now, alert_roles=(), tz=tz)
        entry = plan.entries[0]
    except TargetError as exc:
        logger.warning(
            "target %s of %s no longer routable: %s", target.spec, referral.referral_id, exc
        )
        entry = None
    if (
        entry is not None
        and entry.due_at is not None
        and entry.due_at > now
        and entry.recipient not in passed
    ):
        outbox.reschedule(session, row.id, instance_id=ctx.instance_id, due_at=entry.due_at)
        target.due_at = entry.due_at
        audit.record(
            session,
            "prompt_scheduled",
            at=now,
            referral_id=referral.referral_id,
            actor=ACTOR,
            recipient=entry.recipient,
            target=target.spec,
            detail={
                "rescheduled": True,
                "reason": "nobody in the chain is at work now",
                "due_at": entry.due_at.astimezone(tz).isoformat(),
                "via": entry.via,
                "previous_due_at": row.due_at.astimezone(tz).isoformat(),
            },
            rota_version=store.current_rota_version(),
        )
        outbox.redraw_card(session, referral, now, edt_channel=ctx.settings.edt_channel)
        return Settled(Outcome.RESCHEDULED, reason="nobody at work", next_due_at=entry.due_at)
    # Nobody within 7 days: a person must act, so say so where the EDT will see it.
    outbox.mark_failed(session, row.id, instance_id=ctx.instance_id, now=now, error="unroutable")
    target.state = TargetState.UNROUTABLE
    detail = "nobody in the chain is at work within 7 days (the rota changed)"
    if passed:
        names = ", ".join(f"{who} ({why})" for who, why in passed.items())
        detail = f"nobody else in the chain can be reached; could not reach {names}"
    audit.record(
        session,
        "unroutable",
        at=now,
        referral_id=referral.referral_id,
        actor=ACTOR,
        target=target.spec,
        detail={"reason": detail, "prompt_id": row.id},
        rota_version=store.current_rota_version(),
    )
    raise_alert(
        session,
        ctx.settings,
        OutboxKind.UNROUTABLE,
        referral.referral_id,
        now,
        to_on_call=bool(passed),
        target_id=target.id,
        target=target.spec,
        detail=detail,
    )
    outbox.redraw_card(session, referral, now, edt_channel=ctx.settings.edt_channel)
    return Settled(Outcome.FAILED, reason="unroutable")
