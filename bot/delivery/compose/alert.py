"""Raising and composing alerts: on call, long gap, unroutable, unreachable, delivery failure.

An on-call alert is a DM to the holder of an alert role; an `unreachable` alert (someone was
passed over) goes to every holder of an alert role on shift now; the others go to the EDT
channel (or, from intake, to the on-call holder the plan names). `raise_alert` is the one way
delivery raises an alert; each is an outbox row, delivered like everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
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
from rota.planner import on_call_at
from rota.store import RotaStore

logger = logging.getLogger(__name__)


def on_call_holders(
    session: Session, settings: Settings, now: datetime, *, excluding: Collection[str] = ()
) -> list[str]:
    """The people on shift now in an alert role (HANDOVER_ALERT_ROLES), but those excluded."""
    holders = on_call_at(RotaStore(session), settings.alert_roles, now, settings.timezone)
    return [p for p in dict.fromkeys(p for _, p in holders) if p not in excluding]


def raise_alert(
    session: Session,
    settings: Settings,
    kind: OutboxKind,
    referral_id: str,
    now: datetime,
    *,
    to_on_call: bool = False,
    not_to: Collection[str] = (),
    **detail: Any,
) -> list[str]:
    """An alert, delivered by the outbox like everything else: to the EDT channel, or with
    `to_on_call` a DM to each on-call holder (but those `not_to` names), and the EDT channel
    when nobody is on call. Returns whom it goes to (person ids, or the channel)."""
    holders = on_call_holders(session, settings, now, excluding=not_to) if to_on_call else []
    for holder in holders:
        outbox.enqueue_alert(session, kind, referral_id, due_at=now, recipient_id=holder, **detail)
    if holders:
        return holders
    if not settings.edt_channel:
        logger.error(
            "%s for %s (%s) and no HANDOVER_EDT_CHANNEL to say so",
            kind,
            referral_id,
            detail.get("target"),
        )
        return []
    outbox.enqueue_alert(
        session, kind, referral_id, due_at=now, address=settings.edt_channel, **detail
    )
    return [settings.edt_channel]


def compose_alert(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Composed:
    """The alert, to its on-call holder's DM or to the EDT channel."""
    detail = outbox.load_detail(row)
    check = outbox.needs_check(row)
    target = detail.get("role") if row.kind == OutboxKind.ON_CALL else detail.get("target")
    channel = ctx.channels.for_rooms()
    address = row.address or ctx.settings.edt_channel
    if row.recipient_id:
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
        instead=detail.get("instead"),
        what=detail.get("what"),
    )
    message = Message(
        built["text"], built["blocks"], alert_tag(row.kind, referral.referral_id, row.id)
    )
    to_person = bool(row.recipient_id)
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
