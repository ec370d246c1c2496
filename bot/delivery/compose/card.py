"""Composing a card row: the referral's card in the EDT channel, posted once then updated."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.channels.base import Message, Sent
from bot.delivery import outbox
from bot.delivery.compose.base import Composed, DeliveryContext, Settled, cancel, delivery_of
from bot.delivery.kinds import OutboxKind, Outcome, RowState
from bot.delivery.metadata import card_tag
from bot.models import OutboxMessage, Referral, Target
from bot.settings import EscalationPolicy
from handlers.blocks.card import build_card

logger = logging.getLogger(__name__)

CARD_WAIT = timedelta(seconds=5)  # a card waits while an earlier card row is still in flight


def compose_card(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Composed:
    """The card as the referral's targets stand now: a post, or an update of the posted card."""
    address = referral.card_channel or row.address or ctx.settings.edt_channel
    if not address:
        logger.warning(
            "no HANDOVER_EDT_CHANNEL: the card of %s is not posted", referral.referral_id
        )
        return cancel(ctx, session, row, "no EDT channel")
    if referral.card_ts is None and outbox.unfinished_card_before(
        session, referral.referral_id, row.id
    ):
        # The first card is still on its way; posting now would make a second card.
        outbox.defer(session, row.id, instance_id=ctx.instance_id, until=now + CARD_WAIT)
        return Settled(Outcome.DEFERRED, reason="an earlier card is in flight")
    channel = ctx.channels.for_rooms()
    row.address, row.channel = address, channel.name
    targets = list(
        session.scalars(select(Target).where(Target.referral_id == referral.referral_id))
    )
    built = build_card(
        referral,
        targets,
        tz=ctx.settings.timezone,
        recipients=_recipient_labels(session, referral.referral_id),
        updated_at=now,
        offsets=_offsets(ctx.settings.policy_for(referral.urgency)),
    )
    posted = None
    if referral.card_channel and referral.card_ts:
        posted = Sent(referral.card_channel, referral.card_ts)
    message = Message(built["text"], built["blocks"], card_tag(referral.referral_id, row.id))
    return delivery_of(
        row,
        channel,
        address,
        message,
        update=posted,
        # An update replaces whatever is there; only a first post can be doubled.
        check_history=outbox.needs_check(row) and posted is None,
    )


def _offsets(policy: EscalationPolicy) -> tuple[int, int, int]:
    return policy.reminder_minutes, policy.escalate_minutes, policy.channel_minutes


def _recipient_labels(session: Session, referral_id: str) -> dict[int, str]:
    """How each prompted target's recipient shows on the card (`<@U1>`, `<#C1>`)."""
    rows = session.execute(
        select(
            OutboxMessage.target_id,
            OutboxMessage.recipient_id,
            OutboxMessage.address,
            OutboxMessage.channel,
        )
        .where(
            OutboxMessage.referral_id == referral_id,
            OutboxMessage.kind == OutboxKind.PROMPT,
            OutboxMessage.state == RowState.SENT,
        )
        .order_by(OutboxMessage.sent_at)
    ).all()
    labels: dict[int, str] = {}
    for target_id, recipient_id, address, channel in rows:
        if target_id is None:
            continue
        if channel and channel.startswith("slack:"):
            # In a partner's own workspace: a mention would not resolve in the council's.
            labels[target_id] = f"`{recipient_id}` in their agency's Slack"
        elif channel not in (None, "slack"):
            # Reached by another channel (email): named by their rota id, never an address.
            labels[target_id] = f"`{recipient_id}` by {channel}"
        elif address and address[:1] in ("U", "W"):
            labels[target_id] = f"<@{address}>"
        elif address and address[:1] in ("C", "G"):
            labels[target_id] = f"<#{address}>"
        elif recipient_id:
            labels[target_id] = f"`{recipient_id}`"
    return labels
