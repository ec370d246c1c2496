"""Composing the rows of a promised contact (docs/closing-the-loop.md).

A notice, a check or a missed-contact DM goes to its person (the referrer, the professional,
their manager), or to the daytime owner: the first at work in the chain of
`team:HANDOVER_OWNER_TEAM` when the row is due, else the row waits for the start of the team's
next working period. A check whose promise was already answered is cancelled. The end of the
day's row (`contact_deadline`) sends nothing: a promise still unanswered becomes missed, which
owes its own DMs (bot.services.loop).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from bot.channels.base import Channel, Message
from bot.delivery import outbox
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
from bot.delivery.kinds import OutboxKind, Outcome
from bot.delivery.metadata import loop_tag
from bot.delivery.reads import store_of
from bot.models import ContactFollowup, ContactState, OutboxMessage, Referral, Target
from bot.services import loop
from handlers.blocks.loop import (
    build_contact_check,
    build_contact_missed_message,
    build_information_notice,
)
from rota.plan import TargetError
from rota.planner import plan_referral

logger = logging.getLogger(__name__)


def _followup(session: Session, row: OutboxMessage) -> ContactFollowup | None:
    return session.get(ContactFollowup, outbox.load_detail(row).get("followup_id") or 0)


def _owner_address(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, now: datetime
) -> tuple[str | None, str | None] | Settled:
    """The owner's chain now: (person, None), (None, channel), or the row settled (it waits
    for the team's next working period, or nobody can be reached)."""
    team = ctx.settings.owner_team
    if not team:
        return cancel(ctx, session, row, "no HANDOVER_OWNER_TEAM")
    store = store_of(session)
    try:
        plan = plan_referral(store, [f"team:{team}"], now, alert_roles=(), tz=ctx.settings.timezone)
    except TargetError as exc:
        logger.error("HANDOVER_OWNER_TEAM %r: %s", team, exc)
        return fail(ctx, session, row, now, f"owner team {team}: {exc}")
    entry = plan.entries[0]
    if entry.due_at is None or entry.recipient is None:
        logger.error("nobody of the owner team %s can be reached within 7 days", team)
        return fail(ctx, session, row, now, "owner team unroutable")
    if not entry.immediate and entry.due_at > now:
        outbox.reschedule(session, row.id, instance_id=ctx.instance_id, due_at=entry.due_at)
        return Settled(
            Outcome.RESCHEDULED, reason="owner team not at work", next_due_at=entry.due_at
        )
    if entry.via == "channel":
        return None, entry.recipient
    return entry.recipient, None


def compose_loop_message(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Composed:
    """A notice, a check or a missed-contact DM, to its person or to the owner's chain."""
    followup = _followup(session, row)
    if followup is None:
        return cancel(ctx, session, row, "no promise")
    if row.kind == OutboxKind.CONTACT_CHECK and followup.state != ContactState.AWAITING:
        return cancel(ctx, session, row, f"contact {followup.state}")
    info = outbox.load_detail(row)
    to = info.get("to")
    person, room = row.recipient_id, None
    channel: Channel
    if row.address:
        channel, address = ctx.channels.named(row.channel), row.address
    else:
        if person is None:
            found = _owner_address(ctx, session, row, now)
            if isinstance(found, Settled):
                return found
            person, room = found
            row.recipient_id = person
        if room is not None:
            channel, address = ctx.channels.for_rooms(), room
        else:
            assert person is not None
            reached = reach_person(ctx, session, row, person)
            if isinstance(reached, NeedsAddress):
                return reached
            channel, address = reached
    row.channel, row.address = channel.name, address
    tz = ctx.settings.timezone
    offered = loop.offered_by(session, followup.professional_id)
    if row.kind == OutboxKind.INFO_NOTICE:
        built = build_information_notice(
            referral,
            offered,
            method=followup.method,
            contact_by=followup.contact_by,
            tz=tz,
            owner=to == loop.OWNER,
        )
    elif row.kind == OutboxKind.CONTACT_CHECK:
        built = build_contact_check(
            referral,
            offered,
            followup.id,
            method=followup.method,
            contact_by=followup.contact_by,
            tz=tz,
        )
    else:
        built = build_contact_missed_message(
            referral,
            offered,
            method=followup.method,
            contact_by=followup.contact_by,
            tz=tz,
            to_manager=to == loop.MANAGER,
        )
    target = session.get(Target, followup.target_id)
    tag = loop_tag(row.kind, referral.referral_id, followup.id, row.id)
    message = Message(built["text"], built["blocks"], tag)
    return delivery_of(
        row,
        channel,
        address,
        message,
        person=row.recipient_id,  # none for the owner team's channel
        recipient=row.recipient_id or address,
        target=target.spec if target is not None else None,
        log_detail={
            "followup_id": followup.id,
            "to": to,
            "professional": followup.professional_id,
            "method": followup.method,
            "contact_by": followup.contact_by.astimezone(tz).isoformat(),
        },
    )


def compose_contact_deadline(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Settled:
    """The end of the working day: a promise nobody answered is missed."""
    followup = _followup(session, row)
    if followup is None:
        return cancel(ctx, session, row, "no promise")
    missed = loop.contact_deadline_passed(session, followup, now)
    outbox.mark_sent(
        session, row.id, instance_id=ctx.instance_id, now=now, channel=None, ts=None, late=False
    )
    return Settled(
        Outcome.PERFORMED, reason="contact missed" if missed else f"contact {followup.state}"
    )
