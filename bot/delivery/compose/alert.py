"""Composing an alert row: on call, long gap, unroutable, delivery failure.

An on-call alert is a DM to the holder of an alert role; the others go to the EDT channel (or,
from intake, to the on-call holder the plan names).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.channels.base import Message
from bot.delivery import outbox
from bot.delivery.compose.base import (
    Composed,
    DeliveryContext,
    NeedsAddress,
    delivery_of,
    fail,
    reach_person,
)
from bot.delivery.kinds import OutboxKind
from bot.delivery.metadata import alert_tag
from bot.models import OutboxMessage, Referral
from bot.settings import Settings
from handlers.blocks.alerts import build_alert_message

logger = logging.getLogger(__name__)


def raise_alert(
    session: Session,
    settings: Settings,
    kind: OutboxKind,
    referral_id: str,
    now: datetime,
    **detail: Any,
) -> None:
    """An alert for the EDT channel, delivered by the outbox like everything else."""
    if not settings.edt_channel:
        logger.error(
            "%s for %s (%s) and no HANDOVER_EDT_CHANNEL to say so",
            kind,
            referral_id,
            detail.get("target"),
        )
        return
    outbox.enqueue_alert(
        session, kind, referral_id, due_at=now, address=settings.edt_channel, **detail
    )


def compose_alert(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Composed:
    """The alert, to its on-call holder's DM or to the EDT channel."""
    detail = outbox.load_detail(row)
    check = outbox.needs_check(row)
    target = detail.get("role") if row.kind == OutboxKind.ON_CALL else detail.get("target")
    channel = ctx.channels.for_rooms()
    address = row.address or ctx.settings.edt_channel
    if row.recipient_id and row.kind != OutboxKind.DELIVERY_FAILURE:
        if check and row.address:
            # An earlier attempt chose the DM: look (and post) where it would have posted.
            channel, address = ctx.channels.named(row.channel), row.address
        else:
            reached = reach_person(ctx, session, row, row.recipient_id)
            if isinstance(reached, NeedsAddress):
                return reached
            channel, address = reached
    if not address:
        logger.error(
            "no channel for %s alert of %s: set HANDOVER_EDT_CHANNEL",
            row.kind,
            referral.referral_id,
        )
        return fail(ctx, session, row, now, "no channel")
    row.address, row.channel = address, channel.name
    built = build_alert_message(
        row.kind,
        referral,
        tz=ctx.settings.timezone,
        target=target,
        recipient=detail.get("person_id"),
        detail=detail.get("detail"),
        reason=detail.get("reason"),
        channel=detail.get("channel"),
    )
    message = Message(
        built["text"], built["blocks"], alert_tag(row.kind, referral.referral_id, row.id)
    )
    to_person = bool(row.recipient_id) and row.kind != OutboxKind.DELIVERY_FAILURE
    return delivery_of(
        row,
        channel,
        address,
        message,
        person=row.recipient_id if to_person else None,
        recipient=row.recipient_id,
        target=target,
        log_detail={"detail": detail["detail"]} if detail.get("detail") else {},
    )
